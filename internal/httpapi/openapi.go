package httpapi

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
)

// openapiDoc is the OpenAPI 3.0 document of the whole API, written by hand.
//
//go:embed openapi.json
var openapiDoc []byte

// OpenAPI returns the OpenAPI document of the API, as JSON.
func OpenAPI() []byte { return bytes.Clone(openapiDoc) }

func (h *handler) openapiJSON(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openapiDoc)
}

func (h *handler) openapiYAMLDoc(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(h.openapiYAML)
}

// openapiYAML renders the document as YAML. JSON is valid YAML, so if the
// conversion ever failed the JSON itself would be served.
func openapiYAML() []byte {
	y, err := jsonToYAML(openapiDoc)
	if err != nil {
		return openapiDoc
	}
	return y
}

// jsonToYAML rewrites a JSON document as block-style YAML, keeping the
// order of object keys. Strings are double-quoted (JSON's escapes are valid
// in YAML's double-quoted style), numbers, booleans and null are written as
// they are.
func jsonToYAML(doc []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	n, err := parseNode(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON document")
	}
	var buf bytes.Buffer
	switch n.kind {
	case '{', '[':
		emit(&buf, n, 0)
	default:
		buf.WriteString(n.scalar + "\n")
	}
	return buf.Bytes(), nil
}

// node is a parsed JSON value: an object ('{'), array ('[') or scalar (0).
type node struct {
	kind   byte
	keys   []string
	items  []*node
	scalar string
}

func parseNode(dec *json.Decoder) (*node, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		n := &node{kind: byte(t)}
		for dec.More() {
			if n.kind == '{' {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				n.keys = append(n.keys, k.(string))
			}
			c, err := parseNode(dec)
			if err != nil {
				return nil, err
			}
			n.items = append(n.items, c)
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return nil, err
		}
		return n, nil
	case string:
		return &node{scalar: quote(t)}, nil
	case json.Number:
		return &node{scalar: t.String()}, nil
	case bool:
		if t {
			return &node{scalar: "true"}, nil
		}
		return &node{scalar: "false"}, nil
	case nil:
		return &node{scalar: "null"}, nil
	}
	return nil, errors.New("unexpected JSON token")
}

func quote(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

// plainKey reports whether YAML reads k back as the same string unquoted:
// it starts with a letter, '_', '/' or '$', holds only letters, digits and
// _ . / { } $ + -, and is not one of YAML 1.1's booleans or null.
func plainKey(k string) bool {
	switch strings.ToLower(k) {
	case "", "true", "false", "null", "yes", "no", "on", "off", "y", "n":
		return false
	}
	for i, r := range k {
		letter := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '_' || r == '/' || r == '$'
		if i == 0 && !letter || !letter && !(r >= '0' && r <= '9' || strings.ContainsRune(".{}+-", r)) {
			return false
		}
	}
	return true
}

func yamlKey(k string) string {
	if plainKey(k) {
		return k
	}
	return quote(k)
}

// inline renders empty collections and scalars on the line of their key.
func inline(n *node) (string, bool) {
	switch {
	case n.kind == 0:
		return n.scalar, true
	case len(n.items) == 0 && n.kind == '{':
		return "{}", true
	case len(n.items) == 0:
		return "[]", true
	}
	return "", false
}

// emit writes a non-empty collection with every line indented by indent.
func emit(buf *bytes.Buffer, n *node, indent int) {
	pad := strings.Repeat(" ", indent)
	for i, c := range n.items {
		var lead string
		if n.kind == '{' {
			lead = pad + yamlKey(n.keys[i]) + ":"
		} else {
			lead = pad + "-"
		}
		if s, ok := inline(c); ok {
			buf.WriteString(lead + " " + s + "\n")
			continue
		}
		if n.kind == '{' {
			buf.WriteString(lead + "\n")
			emit(buf, c, indent+2)
			continue
		}
		// An array item that is a collection starts on the dash's line.
		var sub bytes.Buffer
		emit(&sub, c, indent+2)
		buf.WriteString(lead + " " + strings.TrimPrefix(sub.String(), pad+"  "))
	}
}
