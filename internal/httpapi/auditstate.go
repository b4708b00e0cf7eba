package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/google/uuid"

	"github.com/allot-dev/allot/internal/sema"
)

// The state an audit record keeps as before and after: what the change is
// about, and nothing that moves on its own (timestamps, last use, holders'
// expiries). A record of an update therefore differs between before and
// after in the fields changed.

// limitState is a limit's settings (and its counters).
type limitState struct {
	ID                 uuid.UUID `json:"id"`
	Name               string    `json:"name"`
	Limit              int       `json:"limit"`
	Active             bool      `json:"active"`
	ActiveSlots        int       `json:"active_slots"`
	DeniedSlots        int       `json:"denied_slots"`
	SlotDecayPerSecond float64   `json:"slot_decay_per_second"`
	IdleSeconds        *float64  `json:"idle_seconds,omitempty"`
	Template           bool      `json:"template,omitempty"`
}

func toLimitState(v sema.LimitView) limitState {
	j := toLimitJSON(v, false)
	return limitState{ID: j.ID, Name: j.Name, Limit: j.Limit, Active: j.Active, ActiveSlots: j.ActiveSlots,
		DeniedSlots: j.DeniedSlots, SlotDecayPerSecond: j.SlotDecayPerSecond, IdleSeconds: j.IdleSeconds, Template: j.Template}
}

// keyState is a key's record without its secret's hash or its last use.
type keyState struct {
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	Scopes  []string `json:"scopes"`
	Expires *stamp   `json:"expires"`
	Revoked *stamp   `json:"revoked"`
}

// leaseState is a lease: who holds how many slots of which limits.
type leaseState struct {
	LeaseID uuid.UUID    `json:"lease_id"`
	Limits  []string     `json:"limits"`
	Slots   int          `json:"slots"`
	Holder  *sema.Holder `json:"holder"`
	State   string       `json:"state"`
	Reason  string       `json:"reason,omitempty"`
}

func marshalState(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

// tagKind is the run kind of a tag or label limit action, 0 for others.
func tagKind(action string) sema.RunKind {
	switch {
	case strings.HasPrefix(action, "tag_limit."):
		return sema.KindTask
	case strings.HasPrefix(action, "label_limit."):
		return sema.KindFlow
	}
	return 0
}

// maxMatchingState is how many limits a bulk delete's record keeps.
const maxMatchingState = 50

// matchingState is the state before a bulk delete: how many limits its
// pattern matches, and the first maxMatchingState of them, by name.
func (h *handler) matchingState(ctx context.Context, r *http.Request) string {
	body, ok := peekBody(r)
	if !ok {
		return ""
	}
	var d struct {
		Pattern   string `json:"pattern"`
		Templates bool   `json:"templates"`
	}
	if json.Unmarshal(body, &d) != nil {
		return ""
	}
	if strings.Trim(d.Pattern, "*") == "" {
		d.Pattern = "*"
	}
	out := struct {
		Matched int          `json:"matched"`
		Limits  []limitState `json:"limits"`
	}{Limits: []limitState{}}
	const page = 1000
	for offset := 0; ; offset += page {
		vs, err := h.c.ListLimits(ctx, "", offset, page, sema.Summary)
		if err != nil {
			return ""
		}
		for _, v := range vs {
			match := v.Name == d.Pattern || sema.MatchPattern(d.Pattern, v.Name)
			if !match || (v.Template && !d.Templates) {
				continue
			}
			out.Matched++
			if len(out.Limits) < maxMatchingState {
				out.Limits = append(out.Limits, toLimitState(v))
			}
		}
		if len(vs) < page {
			return marshalState(out)
		}
	}
}

// upsertKey peeks at an upsert's body for the tag or label it names and
// puts the body back as it was. "" if the body is too long or not JSON.
func upsertKey(r *http.Request, field string) string {
	body, ok := peekBody(r)
	if !ok {
		return ""
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return ""
	}
	var key string
	if json.Unmarshal(m[field], &key) != nil {
		return ""
	}
	return key
}

// peekBody reads the start of a request's body and puts it back as it
// was; false if there is none or it is longer than maxAuditBody.
func peekBody(r *http.Request) ([]byte, bool) {
	if r.Body == nil {
		return nil, false
	}
	head, err := io.ReadAll(io.LimitReader(r.Body, maxAuditBody+1))
	r.Body = readCloser{io.MultiReader(bytes.NewReader(head), r.Body), r.Body}
	return head, err == nil && len(head) <= maxAuditBody
}

type readCloser struct {
	io.Reader
	io.Closer
}

// state reads the state of an audited request's target as JSON, "" if
// there is none (not found, or a target that is made by the request).
// target is the id the request's answer names, for a target the path does
// not (a key created or rotated, a limit created).
func (h *handler) state(ctx context.Context, r *http.Request, action, target string) string {
	switch action {
	case "limit.create", "limit.update", "limit.delete", "limit.ensure":
		ref := r.PathValue("id_or_name")
		if target != "" {
			ref = target
		}
		if ref == "" {
			return ""
		}
		v, err := h.c.ReadLimit(ctx, ref, sema.Summary)
		if err != nil {
			return ""
		}
		return marshalState(toLimitState(v))
	case "limit.delete_matching":
		return h.matchingState(ctx, r)
	case "lease.revoke":
		id, err := uuid.Parse(r.PathValue("lease_id"))
		if err != nil {
			return ""
		}
		l, refs, err := h.c.Lease(ctx, id)
		if err != nil {
			return ""
		}
		names := make([]string, len(refs))
		for i, ref := range refs {
			names[i] = ref.Name
		}
		return marshalState(leaseState{LeaseID: l.ID, Limits: names, Slots: l.Slots, Holder: holderPtr(l.Holder), State: "held"})
	case "key.create", "key.rotate", "key.revoke":
		id := r.PathValue("id")
		if target != "" {
			id = target
		}
		if h.keys == nil || id == "" {
			return ""
		}
		k, err := h.keys.Get(id)
		if err != nil {
			return ""
		}
		return marshalState(keyState{ID: k.ID, Name: k.Name, Scopes: k.Scopes, Expires: stampPtr(k.Expires), Revoked: stampPtr(k.Revoked)})
	}
	kind := tagKind(action)
	if kind == 0 {
		return ""
	}
	ref := tagRefOf(r)
	if id, err := uuid.Parse(target); err == nil {
		ref = sema.TagLimitRef{ID: id}
	} else if target != "" {
		ref = sema.TagLimitRef{Key: target}
	}
	if ref == (sema.TagLimitRef{}) {
		return ""
	}
	v, err := h.c.ReadTagLimit(ctx, kind, ref)
	if err != nil {
		return ""
	}
	return marshalState(toLimitState(v))
}

// tagRefOf is the tag or label limit a request's path names, zero if
// none.
func tagRefOf(r *http.Request) sema.TagLimitRef {
	if key := r.PathValue("key"); key != "" {
		return sema.TagLimitRef{Key: key}
	}
	if id, err := uuid.Parse(r.PathValue("id")); err == nil {
		return sema.TagLimitRef{ID: id}
	}
	return sema.TagLimitRef{}
}

// beforeTarget is the target of an audited request that its path does not
// name: the tag or label of an upsert, read from its body.
func beforeTarget(r *http.Request, action string) string {
	switch action {
	case "tag_limit.upsert":
		return upsertKey(r, "tag")
	case "label_limit.upsert":
		return upsertKey(r, "label")
	}
	return ""
}

// afterState is the state of a successful request's target after it: the
// one its answer names (id), else the one before named (a limit renamed
// keeps its id), else the path's. A deletion leaves none; a revoked lease
// is its state before, revoked.
func (h *handler) afterState(ctx context.Context, r *http.Request, action, before, answerID, reason string) string {
	switch action {
	case "limit.delete", "tag_limit.delete", "label_limit.delete":
		return ""
	case "lease.revoke":
		var l leaseState
		if before == "" || json.Unmarshal([]byte(before), &l) != nil {
			return ""
		}
		l.State, l.Reason = "revoked", reason
		return marshalState(l)
	}
	target := answerID
	if target == "" && before != "" {
		var was struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal([]byte(before), &was)
		target = was.ID
	}
	if action == "key.revoke" {
		target = ""
	}
	return h.state(ctx, r, action, target)
}

// beforeKey is the context key of where the gate wants an audited
// request's state before.
type beforeKey struct{}

// readBefore reads an audited route's target's state before serving it,
// where the gate asked for it (with authentication on). It runs inside the
// mux, where the request's path values are known.
func (h *handler) readBefore(action string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if slot, ok := r.Context().Value(beforeKey{}).(*string); ok {
			*slot = h.state(r.Context(), r, action, beforeTarget(r, action))
		}
		next.ServeHTTP(w, r)
	})
}
