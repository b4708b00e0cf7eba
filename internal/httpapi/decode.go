package httpapi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/allot-dev/allot/internal/jsonbody"
)

// readBody reads and parses the request's JSON object. An absent, empty or
// null body is an empty object when optional, and an error otherwise.
func (h *handler) readBody(w http.ResponseWriter, r *http.Request, optional bool) (*jsonbody.Body, error) {
	if r.ContentLength > h.maxBody {
		return nil, tooLarge(h.maxBody)
	}
	data, err := readAll(w, r, h.maxBody)
	if err == nil {
		// The body is in: what follows (a wait in line) is not bounded by
		// the body's deadline that middleware set.
		_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	}
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			return nil, tooLarge(h.maxBody)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, &requestError{Code: codeBodyTimeout,
				Detail: fmt.Sprintf("the request body did not arrive within %v", h.bodyTimeout)}
		}
		return nil, &requestError{Code: codeInvalidJSON, Status: http.StatusBadRequest, Detail: "reading request body: " + err.Error()}
	}
	data = bytes.TrimSpace(data)
	if len(data) > 0 {
		if err := checkMediaType(r.Header.Get("Content-Type")); err != nil {
			return nil, err
		}
	}
	b, isObject := new(jsonbody.Body), false
	if len(data) > 0 {
		if b, isObject, err = jsonbody.Parse(data); err != nil {
			return nil, err
		}
	}
	if !isObject && !optional {
		return nil, &requestError{Code: codeInvalidJSON, Detail: "request body is required: a JSON object"}
	}
	return b, nil
}

// maxPreallocate is the largest announced body readAll allocates before it
// arrives: a client that announces a megabyte and sends nothing pins no
// more than this.
const maxPreallocate = 16 << 10

// readAll reads a request body of at most limit bytes: in one read of the
// announced length when it is small, else through http.MaxBytesReader.
func readAll(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if n := r.ContentLength; n >= 0 && n <= min(limit, maxPreallocate) {
		data := make([]byte, n)
		_, err := io.ReadFull(r.Body, data)
		return data, err
	}
	return io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
}

func tooLarge(n int64) error {
	return &requestError{Code: codeBodyTooLarge,
		Detail: fmt.Sprintf("request body is larger than %d bytes", n)}
}

// checkMediaType accepts JSON bodies only. Refusing form and text types
// means a page on another site cannot post to the API without a CORS
// preflight.
func checkMediaType(ct string) error {
	if ct == "" || ct == "application/json" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil && (mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")) {
		return nil
	}
	return &requestError{Code: codeUnsupportedMediaType,
		Detail: fmt.Sprintf("Content-Type %q is not supported; send application/json", ct)}
}
