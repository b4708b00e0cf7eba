package allot

import (
	"context"
	"net/http"
	"time"
)

// Run is a task run or flow run as the server reports it.
type Run struct {
	ID   string   `json:"id"`
	Kind string   `json:"kind"` // "task" or "flow"
	Name string   `json:"name"`
	Tags []string `json:"tags"`
	// Limits are the global limits the run takes Slots slots of with its
	// tags' limits (RunLimits).
	Limits   []string `json:"limits,omitempty"`
	Slots    int      `json:"slots,omitempty"`
	ParentID string   `json:"parent_id,omitempty"`
	// State is one of the State… constants.
	State        string     `json:"state"`
	StateHistory []RunState `json:"state_history"`
	LeaseID      string     `json:"lease_id,omitempty"`
	FencingToken uint64     `json:"fencing_token,omitempty"`
	Created      time.Time  `json:"created"`
	Updated      time.Time  `json:"updated"`
}

// RunState is one entry of a run's state history.
type RunState struct {
	State     string    `json:"state"`
	Timestamp time.Time `json:"timestamp"`
	Message   string    `json:"message,omitempty"`
}

// GetRun reads a run by id. An unknown run is an error matching
// ErrNotFound.
func (c *Client) GetRun(ctx context.Context, id string) (*Run, error) {
	var r Run
	if err := c.do(ctx, request{method: http.MethodGet, path: runPath(id), accept: []int{http.StatusOK}}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
