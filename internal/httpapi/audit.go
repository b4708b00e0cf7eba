package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/allot-dev/allot/internal/auth"
	"github.com/allot-dev/allot/internal/jsonbody"
	"github.com/allot-dev/allot/internal/sema"
)

// auditActions names the routes whose successful requests the gate writes
// to the audit log: every change of keys and limits, every reset and
// revocation (enabling and disabling a limit is an update). Acquisitions
// are not audited; they are counted per key in metrics.
var auditActions = map[string]string{
	"POST /api/v2/concurrency_limits/{$}":                      "limit.create",
	"POST /api/v2/concurrency_limits":                          "limit.create",
	"PATCH /api/v2/concurrency_limits/{id_or_name}":            "limit.update",
	"DELETE /api/v2/concurrency_limits/{id_or_name}":           "limit.delete",
	"PUT /api/v2/concurrency_limits/{id_or_name}":              "limit.ensure",
	"POST /api/v2/concurrency_limits/delete":                   "limit.delete_matching",
	"POST /api/v2/concurrency_limits/leases/{lease_id}/revoke": "lease.revoke",
	"POST /api/concurrency_limits/{$}":                         "tag_limit.upsert",
	"POST /api/concurrency_limits":                             "tag_limit.upsert",
	"DELETE /api/concurrency_limits/{id}":                      "tag_limit.delete",
	"DELETE /api/concurrency_limits/tag/{key}":                 "tag_limit.delete",
	"POST /api/concurrency_limits/tag/{key}/reset":             "tag_limit.reset",
	"POST /api/label_limits/{$}":                               "label_limit.upsert",
	"POST /api/label_limits":                                   "label_limit.upsert",
	"DELETE /api/label_limits/{id}":                            "label_limit.delete",
	"DELETE /api/label_limits/label/{key}":                     "label_limit.delete",
	"POST /api/label_limits/label/{key}/reset":                 "label_limit.reset",
	"POST /api/admin/keys":                                     "key.create",
	"POST /api/admin/keys/{id}/rotate":                         "key.rotate",
	"POST /api/admin/keys/{id}/revoke":                         "key.revoke",
}

// maxAuditBody bounds the answer kept as a record's After.
const maxAuditBody = 8 << 10

// auditWriter keeps the status and the start of the body of an answer.
type auditWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (w *auditWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *auditWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if room := maxAuditBody - w.body.Len(); room > 0 {
		w.body.Write(p[:min(len(p), room)])
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *auditWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// audited writes the record of a successful audited request, with its
// target's state before (read by the gate just before the request ran) and
// after. A key's record never keeps the answer (it carries the new key's
// secret): only the key's id, name, scopes, expiry and revocation.
func (h *handler) audited(r *http.Request, p *auth.Principal, action, before string, w *auditWriter) {
	if w.status >= 400 || w.status == 0 {
		return
	}
	rec := h.record(r, p, action)
	rec.Status = w.status
	rec.Target = r.PathValue("id_or_name") + r.PathValue("lease_id") + r.PathValue("key") + r.PathValue("id")
	var answer struct {
		ID     string `json:"id"`
		Name   string `json:"name"`
		Tag    string `json:"tag"`
		Label  string `json:"label"`
		Reason string `json:"reason"`
	}
	_ = json.Unmarshal(w.body.Bytes(), &answer)
	ctx := context.WithoutCancel(r.Context())
	rec.Before = before
	switch action {
	case "key.create", "key.rotate":
		rec.Target = answer.ID
		rec.After = h.afterState(ctx, r, action, before, answer.ID, "")
	case "limit.delete_matching":
		if json.Valid(w.body.Bytes()) {
			rec.After = string(bytes.TrimSpace(w.body.Bytes()))
		}
	default:
		rec.After = h.afterState(ctx, r, action, before, answer.ID, answer.Reason)
		if rec.Target == "" {
			rec.Target = answer.Name + answer.Tag + answer.Label
		}
	}
	h.writeAudit(r, rec)
}

// refused writes the record of a request refused for its key (401) or its
// scopes (403). keyID is the id the request named, if any.
func (h *handler) refused(r *http.Request, p *auth.Principal, keyID string, status int, err error) {
	rec := h.record(r, p, "auth.refused")
	if p == nil {
		rec.KeyID = keyID
	}
	detail, _ := json.Marshal(err.Error())
	rec.Status, rec.Target, rec.After = status, r.Method+" "+r.URL.Path, string(detail)
	h.writeAudit(r, rec)
}

func (h *handler) record(r *http.Request, p *auth.Principal, action string) sema.AuditRecord {
	rec := sema.AuditRecord{Time: time.Now(), Remote: r.RemoteAddr, RequestID: r.Header.Get("X-Request-Id"), Action: action}
	if p != nil {
		rec.KeyID, rec.KeyName = p.KeyID, p.Name
	}
	return rec
}

// clean makes s valid UTF-8 without control characters, as every store
// can keep it.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}

func (h *handler) writeAudit(r *http.Request, rec sema.AuditRecord) {
	rec.Remote, rec.RequestID, rec.Target = clean(rec.Remote), clean(rec.RequestID), clean(rec.Target)
	if len(rec.RequestID) > 128 {
		rec.RequestID = rec.RequestID[:128]
	}
	// The record outlives a caller that went away.
	if err := h.c.Audit(context.WithoutCancel(r.Context()), rec); err != nil {
		h.log.Error("audit record not written", "action", rec.Action, "target", rec.Target, "key_id", rec.KeyID, "err", err)
	}
}

// auditJSON is an audit record as GET /api/admin/audit shows it.
type auditJSON struct {
	Seq       uint64          `json:"seq"`
	Time      stamp           `json:"time"`
	KeyID     string          `json:"key_id"`
	KeyName   string          `json:"key_name"`
	Remote    string          `json:"remote"`
	RequestID string          `json:"request_id"`
	Action    string          `json:"action"`
	Target    string          `json:"target"`
	Status    int             `json:"status"`
	Before    json.RawMessage `json:"before"`
	After     json.RawMessage `json:"after"`
}

func rawOrNull(s string) json.RawMessage {
	if s == "" || !json.Valid([]byte(s)) {
		return json.RawMessage("null")
	}
	return json.RawMessage(s)
}

// auditQuery is GET /api/admin/audit?limit=N&key_id=ID&before=SEQ.
type auditQuery struct {
	n      int
	keyID  string
	before uint64
}

func readAuditQuery(r *http.Request, _ *jsonbody.Body) (auditQuery, error) {
	q := r.URL.Query()
	aq := auditQuery{n: 100, keyID: q.Get("key_id")}
	for k := range q {
		if k != "limit" && k != "key_id" && k != "before" {
			return aq, &requestError{Code: codeUnknownField, Field: k,
				Detail: "unknown query parameter; known ones are limit, key_id, before"}
		}
	}
	if s := q.Get("limit"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > 1000 {
			return aq, invalidField("limit", "must be an integer from 1 to 1000")
		}
		aq.n = v
	}
	if s := q.Get("before"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return aq, invalidField("before", "must be a record's seq")
		}
		aq.before = v
	}
	return aq, nil
}

// readAudit answers the records newest first.
func (h *handler) readAudit(ctx context.Context, q auditQuery) ([]auditJSON, error) {
	if h.keys == nil {
		return nil, errAuthOff
	}
	recs, err := h.c.AuditLog(ctx, q.keyID, q.before, q.n)
	if err != nil {
		return nil, err
	}
	out := make([]auditJSON, len(recs))
	for i, a := range recs {
		out[i] = auditJSON{Seq: a.Seq, Time: stamp(a.Time), KeyID: a.KeyID, KeyName: a.KeyName, Remote: a.Remote,
			RequestID: a.RequestID, Action: a.Action, Target: a.Target, Status: a.Status,
			Before: rawOrNull(a.Before), After: rawOrNull(a.After)}
	}
	return out, nil
}
