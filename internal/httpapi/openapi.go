package httpapi

import (
	"bytes"
	_ "embed"
	"net/http"

	yaml "github.com/oasdiff/yaml3"
)

// openapiDoc is the OpenAPI 3.0 document of the whole API, written by hand
// in JSON: the one source. /api/openapi.yaml serves the same document in
// YAML, rendered from it by the YAML library (see openapiYAML).
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

// openapiYAML renders the document as block-style YAML in the JSON's key
// order: JSON is YAML, so the library reads the document as a YAML node
// tree, and writes it back without JSON's flow style. If that ever failed,
// the JSON itself (valid YAML) would be served.
func openapiYAML() []byte {
	var doc yaml.Node
	if err := yaml.Unmarshal(openapiDoc, &doc); err != nil {
		return openapiDoc
	}
	blockStyle(&doc)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if enc.Encode(&doc) != nil || enc.Close() != nil {
		return openapiDoc
	}
	return buf.Bytes()
}

// blockStyle drops JSON's flow style from collections and its quotes from
// mapping keys (the encoder still quotes a key YAML would read as something
// else, "200" or "yes", as the node keeps its string tag); string values
// stay double-quoted, with JSON's escapes.
func blockStyle(n *yaml.Node) {
	n.Style &^= yaml.FlowStyle
	for i, c := range n.Content {
		if n.Kind == yaml.MappingNode && i%2 == 0 {
			c.Style = 0
		}
		blockStyle(c)
	}
}
