package auth

import (
	"encoding/base64"
	"strings"
)

// ParseAuthorization returns the key an Authorization header carries:
//
//	Bearer KEY
//	Basic base64(KEY)
//	Basic base64(anything:KEY)
//
// The last two are what Prefect's clients send with PREFECT_API_AUTH_STRING
// and its Terraform provider with basic_auth_key. The scheme is matched
// without regard to case. It returns ErrNoKey for an empty header and
// ErrBadKey for anything else that carries no well-formed key; the error
// never repeats the header.
func ParseAuthorization(h string) (Token, error) {
	if h == "" {
		return Token{}, ErrNoKey
	}
	scheme, cred, ok := strings.Cut(h, " ")
	if !ok {
		return Token{}, ErrBadKey
	}
	cred = strings.TrimLeft(cred, " ")
	switch {
	case strings.EqualFold(scheme, "Bearer"):
	case strings.EqualFold(scheme, "Basic"):
		if len(cred) > 4*maxKeyLen { // nothing to decode that long
			return Token{}, ErrBadKey
		}
		b, err := base64.StdEncoding.DecodeString(cred)
		if err != nil {
			return Token{}, ErrBadKey
		}
		cred = string(b)
		if i := strings.LastIndexByte(cred, ':'); i >= 0 {
			cred = cred[i+1:]
		}
	default:
		return Token{}, ErrBadKey
	}
	t, ok := ParseToken(strings.TrimRight(cred, " "))
	if !ok {
		return Token{}, ErrBadKey
	}
	return t, nil
}

// maxKeyLen bounds a key's length.
const maxKeyLen = len(Prefix) + idHexLen + 1 + secretHexLen
