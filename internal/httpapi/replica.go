package httpapi

import (
	"net/http"
)

// LeaderHeader names, in every answer of a replica over PostgreSQL, the
// address of the replica that leads, so that a client can go to it
// directly.
const LeaderHeader = "Allot-Leader"

// WriteNoLeader answers a request that a replica can neither serve nor
// forward (no replica leads yet, or the leader does not answer): 503
// "unavailable", with Retry-After. detail says why.
func WriteNoLeader(w http.ResponseWriter, detail string) {
	w.Header().Set("Retry-After", "1")
	writeProblemDoc(w, newProblem(codeUnavailable, detail, ""))
}
