package sema

import (
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Prefect's v1 tag-limit commands, and allot's label limits that mirror
// them. A tag limit is the limit "tag:{tag}", a label limit
// "label:{label}": a run kind's LimitPrefix. They are ordinary limits, so
// one mechanism enforces both; these commands only find them by their key
// (the tag or the label) and speak for the holders of that kind (task runs,
// flow runs).

// TagLimitRef finds a tag or label limit: by ID when it is not the zero
// UUID, else by Key, the tag or label itself.
type TagLimitRef struct {
	ID  uuid.UUID
	Key string
}

// TagLimit returns the view of the tag or label limit of kind that ref
// finds; a limit with that id but another prefix is not found.
func (m *Machine) TagLimit(now time.Time, kind RunKind, ref TagLimitRef, d Detail) (LimitView, error) {
	l := m.tagLimit(kind, ref)
	if l == nil {
		return LimitView{}, ErrLimitNotFound
	}
	return m.view(now, l, d), nil
}

func (m *Machine) tagLimit(kind RunKind, ref TagLimitRef) *limitState {
	if ref.ID != uuid.Nil {
		l := m.byID[ref.ID]
		if l == nil || !strings.HasPrefix(l.Name, kind.LimitPrefix()) {
			return nil
		}
		return l
	}
	return m.byName[kind.LimitPrefix()+ref.Key]
}

// CheckTag checks a tag or label by the one rule of tags, the rule of a
// run's tags (ValidateTag): a tag limit is the limit of a tag, so a key
// with '*' would make a template, which the tag-limit commands do not
// create. field names the request field the key came from.
func CheckTag(kind RunKind, field, key string) error {
	if why := ValidateTag(kind, key); why != "" {
		return &InvalidError{Field: field, Detail: "\"" + key + "\" " + why}
	}
	return nil
}

// tagLimitNames turns keys into limit names, checking each; field names
// the request field they came from.
func tagLimitNames(kind RunKind, field string, keys []string) ([]string, error) {
	names := make([]string, len(keys))
	for i, k := range keys {
		if err := CheckTag(kind, field, k); err != nil {
			return nil, err
		}
		names[i] = kind.LimitPrefix() + k
	}
	return names, nil
}

// UpsertTagLimit creates the limit of key with limit slots (active), with
// id, or sets the limit of the existing one. created reports which.
func (m *Machine) UpsertTagLimit(now time.Time, kind RunKind, key string, limit int, id uuid.UUID) (l Limit, created bool, err error) {
	if err := CheckTag(kind, kind.Noun(), key); err != nil {
		return Limit{}, false, err
	}
	name := kind.LimitPrefix() + key
	cur := m.byName[name]
	if cur == nil {
		l, err := m.CreateLimit(now, id, LimitSpec{Name: name, Limit: limit, Active: true})
		return l, err == nil, err
	}
	l, err = m.UpdateLimit(now, cur.ID, LimitPatch{Limit: &limit})
	return l, false, err
}

// TagLimitReset is what ResetTagLimit did.
type TagLimitReset struct {
	// Revoked is the number of leases revoked.
	Revoked int
	// Granted and Refused are the override holders that got a slot and
	// those that did not fit.
	Granted, Refused []string
}

// ResetTagLimit revokes every lease on the tag or label limit that ref
// finds (a run that held one is Crashed: its slot is gone), then gives a
// slot to each holder id in override, in order and once each, as long as
// one is free and nobody waits for it: the waiters the revocation let in
// come first. The override holders' leases are of kind's holder type and
// last d; the i-th distinct holder's lease takes leaseIDs[i], so leaseIDs
// must be at least as long as override.
func (m *Machine) ResetTagLimit(now time.Time, kind RunKind, ref TagLimitRef, override []string, leaseIDs []uuid.UUID, d time.Duration) (TagLimitReset, error) {
	var res TagLimitReset
	l := m.tagLimit(kind, ref)
	if l == nil {
		return res, ErrLimitNotFound
	}
	if len(leaseIDs) < len(override) {
		return res, invalid("slot_override", "%d lease ids for %d holders", len(leaseIDs), len(override))
	}
	res.Revoked, _ = m.RevokeLimitLeases(now, l.ID, "slot revoked by reset")
	var seen []string
	for _, id := range override {
		if slices.Contains(seen, id) {
			continue
		}
		out, err := m.Acquire(now, Request{Names: []string{l.Name}, Slots: 1, LeaseID: leaseIDs[len(seen)],
			LeaseDuration: d, Holder: Holder{Type: kind.HolderType(), ID: id}})
		seen = append(seen, id)
		if err != nil || !out.Granted {
			res.Refused = append(res.Refused, id)
			continue
		}
		res.Granted = append(res.Granted, id)
	}
	return res, nil
}

// IncrementTagLimits takes one slot of every existing limit of keys at once
// for holderID (Prefect's v1 increment), in a lease of d with id leaseID,
// and returns the limits. Keys without a limit are skipped. A full limit
// fails with a *LockedError whose RetryAfter is Config.TagMaxWait
// (Prefect's fixed Retry-After for v1); a limit of 0 with a *NeverError.
func (m *Machine) IncrementTagLimits(now time.Time, kind RunKind, keys []string, holderID string, leaseID uuid.UUID, d time.Duration) ([]LimitRef, error) {
	names, err := tagLimitNames(kind, "names", keys)
	if err != nil {
		return nil, err
	}
	out, err := m.Acquire(now, Request{Names: names, Slots: 1, LeaseID: leaseID,
		LeaseDuration: d, Holder: Holder{Type: kind.HolderType(), ID: holderID}})
	if le := (*LockedError)(nil); errors.As(err, &le) {
		le.RetryAfter = m.cfg.TagMaxWait
		return nil, le
	}
	return out.Limits, err
}

// DecrementTagLimits releases every lease of holderID that holds one of
// the limits of keys, all its limits included (Prefect's v1 decrement),
// and returns the existing limits of keys.
func (m *Machine) DecrementTagLimits(now time.Time, kind RunKind, keys []string, holderID string) ([]LimitRef, error) {
	names, err := tagLimitNames(kind, "names", keys)
	if err != nil {
		return nil, err
	}
	refs, _ := m.ReleaseHolderLeases(now, names, Holder{Type: kind.HolderType(), ID: holderID})
	return refs, nil
}

// ReleaseHolderLeases releases every lease of holder that holds one of the
// named limits (Prefect's v1 decrement), all its limits included. A run
// whose lease it releases is Crashed. It returns the existing named limits
// and the number of leases released.
func (m *Machine) ReleaseHolderLeases(now time.Time, names []string, holder Holder) ([]LimitRef, int) {
	var ls []*limitState
	seen := map[*leaseState]bool{}
	var lls []*leaseState
	for _, name := range names {
		l := m.byName[name]
		if l == nil || slices.Contains(ls, l) {
			continue
		}
		ls = append(ls, l)
		for ll := range l.leases {
			if !seen[ll] && ll.Holder.Type == holder.Type && ll.Holder.ID == holder.ID {
				seen[ll] = true
				lls = append(lls, ll)
			}
		}
	}
	slices.SortFunc(lls, compareLease)
	n := 0
	for _, ll := range lls {
		if m.release(now, ll, "its lease was released by a decrement of "+holder.Type+" "+holder.ID) {
			n++
		}
	}
	return refs(ls), n
}
