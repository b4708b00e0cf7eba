package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/allot-dev/allot/internal/auth"
	"github.com/allot-dev/allot/internal/jsonbody"
	"github.com/allot-dev/allot/internal/sema"
)

// maxKeySeconds bounds a key's lifetime and a rotation's grace: ten years.
const maxKeySeconds = 10 * 365 * 24 * 3600

// keyJSON is an API key as the admin routes show it: never its secret or
// hash (newKeyJSON adds the whole key to the answer that makes it).
type keyJSON struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Scopes   []string `json:"scopes"`
	Created  stamp    `json:"created"`
	Expires  *stamp   `json:"expires"`
	Revoked  *stamp   `json:"revoked"`
	LastUsed *stamp   `json:"last_used"`
}

func stampPtr(t time.Time) *stamp {
	if t.IsZero() {
		return nil
	}
	s := stamp(t)
	return &s
}

func toKeyJSON(k sema.Key) keyJSON {
	return keyJSON{ID: k.ID, Name: k.Name, Scopes: k.Scopes, Created: stamp(k.Created),
		Expires: stampPtr(k.Expires), Revoked: stampPtr(k.Revoked), LastUsed: stampPtr(k.LastUsed)}
}

func (h *handler) keyRoutes() []route {
	const base = "/api/admin/keys"
	return []route{
		{"POST " + base, jsonOp(h, op[auth.NewKey, newKeyJSON]{status: http.StatusCreated, body: requiredBody, strict: true,
			decode: readNewKey, call: h.createKey})},
		{"GET " + base, jsonOp(h, op[none, []keyJSON]{status: http.StatusOK, decode: noRequest, call: h.listKeys})},
		{"GET " + base + "/{id}", jsonOp(h, op[string, keyJSON]{status: http.StatusOK, decode: pathKeyID, call: h.readKey})},
		{"POST " + base + "/{id}/rotate", jsonOp(h, op[rotation, newKeyJSON]{status: http.StatusCreated, body: optionalBody, strict: true,
			decode: readRotation, call: h.rotateKey})},
		{"POST " + base + "/{id}/revoke", jsonOp(h, op[string, keyJSON]{status: http.StatusOK, decode: pathKeyID, call: h.revokeKey})},
		{"GET /api/admin/audit", jsonOp(h, op[auditQuery, []auditJSON]{status: http.StatusOK, decode: readAuditQuery, call: h.readAudit})},
	}
}

// newKeyJSON is a key with its secret, in the answer that makes it.
type newKeyJSON struct {
	keyJSON
	Key string `json:"key"`
}

// keyring returns the keyring, or errAuthOff.
func (h *handler) keyring() (*auth.Keyring, error) {
	if h.keys == nil {
		return nil, errAuthOff
	}
	return h.keys, nil
}

func pathKeyID(r *http.Request, _ *jsonbody.Body) (string, error) { return r.PathValue("id"), nil }

func readNewKey(_ *http.Request, b *jsonbody.Body) (auth.NewKey, error) {
	var nk auth.NewKey
	var expires float64
	b.Require("name", b.Str("name", &nk.Name))
	b.Require("scopes", b.StrArray("scopes", &nk.Scopes, 1, 100))
	if b.Number("expires_seconds", &expires, 0, maxKeySeconds, true) {
		nk.TTL = time.Duration(expires * float64(time.Second))
	}
	return nk, nil
}

func (h *handler) createKey(ctx context.Context, nk auth.NewKey) (newKeyJSON, error) {
	kr, err := h.keyring()
	if err != nil {
		return newKeyJSON{}, err
	}
	tok, k, err := kr.Create(ctx, nk)
	if err != nil {
		return newKeyJSON{}, err
	}
	return newKeyJSON{keyJSON: toKeyJSON(k), Key: tok.String()}, nil
}

func (h *handler) listKeys(ctx context.Context, _ none) ([]keyJSON, error) {
	kr, err := h.keyring()
	if err != nil {
		return nil, err
	}
	keys := kr.List()
	out := make([]keyJSON, len(keys))
	for i, k := range keys {
		out[i] = toKeyJSON(k)
	}
	return out, nil
}

func (h *handler) readKey(ctx context.Context, id string) (keyJSON, error) {
	kr, err := h.keyring()
	if err != nil {
		return keyJSON{}, err
	}
	k, err := kr.Get(id)
	if err != nil {
		return keyJSON{}, err
	}
	return toKeyJSON(k), nil
}

// rotation is a rotate request: the key and the old key's grace.
type rotation struct {
	id    string
	grace time.Duration
}

func readRotation(r *http.Request, b *jsonbody.Body) (rotation, error) {
	var grace float64
	b.Number("grace_seconds", &grace, 0, maxKeySeconds, false)
	return rotation{id: r.PathValue("id"), grace: time.Duration(grace * float64(time.Second))}, nil
}

func (h *handler) rotateKey(ctx context.Context, rot rotation) (newKeyJSON, error) {
	kr, err := h.keyring()
	if err != nil {
		return newKeyJSON{}, err
	}
	tok, k, err := kr.Rotate(ctx, rot.id, rot.grace)
	if err != nil {
		return newKeyJSON{}, err
	}
	return newKeyJSON{keyJSON: toKeyJSON(k), Key: tok.String()}, nil
}

func (h *handler) revokeKey(ctx context.Context, id string) (keyJSON, error) {
	kr, err := h.keyring()
	if err != nil {
		return keyJSON{}, err
	}
	_, k, err := kr.Revoke(ctx, id)
	if err != nil {
		return keyJSON{}, err
	}
	return toKeyJSON(k), nil
}
