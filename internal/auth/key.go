package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"strings"
)

// Prefix opens every key.
const Prefix = "allot_"

const (
	idHexLen     = 12 // 48 bits: an id, not a secret
	secretHexLen = 64 // 256 bits
)

// Token is a parsed key: its public id and its secret.
type Token struct {
	ID     string
	Secret string
}

// String returns the key as clients send it. It contains the secret: never
// log it.
func (t Token) String() string { return Prefix + t.ID + "_" + t.Secret }

// Hash returns the SHA-256 of the token's secret, the only form in which a
// secret is kept.
func (t Token) Hash() []byte {
	h := sha256.Sum256([]byte(t.Secret))
	return h[:]
}

// Generate returns a new key with a random id and secret.
func Generate() Token {
	var b [idHexLen/2 + secretHexLen/2]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return Token{ID: hex.EncodeToString(b[:idHexLen/2]), Secret: hex.EncodeToString(b[idHexLen/2:])}
}

// ParseToken splits a key into its id and secret. It accepts exactly the
// form Generate makes: allot_, 12 lowercase hex digits, _, 64 lowercase
// hex digits.
func ParseToken(s string) (Token, bool) {
	rest, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return Token{}, false
	}
	id, secret, ok := strings.Cut(rest, "_")
	if !ok || !isHex(id, idHexLen) || !isHex(secret, secretHexLen) {
		return Token{}, false
	}
	return Token{ID: id, Secret: secret}, true
}

// ValidID reports whether id has the form of a key id.
func ValidID(id string) bool { return isHex(id, idHexLen) }

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// matches reports, in constant time, whether secret hashes to hash.
func matches(hash []byte, secret string) bool {
	h := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(hash, h[:]) == 1
}
