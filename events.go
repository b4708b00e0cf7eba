package allot

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Event is one event of the server's stream (Watch): a lease granted,
// released, expired or revoked, a limit created, changed or deleted, or a
// run created or changed state.
type Event struct {
	// Kind is "granted", "released", "expired", "revoked", "limit" or
	// "run".
	Kind string `json:"-"`
	// At is when the server sent it.
	At time.Time `json:"at"`
	// LeaseID, Holder, Slots and FencingToken describe the lease of a
	// lease event.
	LeaseID      string    `json:"lease_id,omitempty"`
	Holder       *Identity `json:"holder,omitempty"`
	Slots        int       `json:"slots,omitempty"`
	FencingToken uint64    `json:"fencing_token,omitempty"`
	// Limits are the limits of a lease event, the limit of a limit event,
	// or the limits a run takes.
	Limits []string `json:"limits"`
	// Deleted marks a limit event of a deletion.
	Deleted bool `json:"deleted,omitempty"`
	// Reason says why a lease ended, when the server knows.
	Reason string `json:"reason,omitempty"`
	// Run is the run of a run event.
	Run *EventRun `json:"run,omitempty"`
}

// EventRun is the run of a run event.
type EventRun struct {
	ID      string   `json:"id"`
	Kind    string   `json:"kind"`
	Name    string   `json:"name"`
	State   string   `json:"state"`
	Tags    []string `json:"tags"`
	Message string   `json:"message,omitempty"`
}

// maxEventLine bounds one line of the event stream.
const maxEventLine = 1 << 20

// WatchOptions says what Watch streams.
type WatchOptions struct {
	// Names, if any, keep the events of those limits and of the runs that
	// take them (or have that name or id).
	Names []string
	// Opened, if set, is called once the server streams: every event
	// from then on reaches fn.
	Opened func()
}

// Watch streams the server's events to fn until ctx is done (it then
// returns nil), fn returns an error (returned), or the stream breaks (an
// error: events may have been missed). The server drops events for a
// client that does not keep up, so fn should be quick.
func (c *Client) Watch(ctx context.Context, opts WatchOptions, fn func(Event) error) error {
	q := url.Values{}
	for _, n := range opts.Names {
		q.Add("name", n)
	}
	path := "/events"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	req.Header.Set("Accept", "text/event-stream, application/problem+json")
	req.Header.Set("User-Agent", "allot-go")
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("watch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
		return fmt.Errorf("watch: %w", answerError(resp, data, ""))
	}
	if opts.Opened != nil {
		opts.Opened()
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), maxEventLine)
	var kind, data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if kind != "" && data != "" {
				e := Event{}
				if err := json.Unmarshal([]byte(data), &e); err != nil {
					return fmt.Errorf("watch: decode %s event: %w", kind, err)
				}
				e.Kind = kind
				if err := fn(e); err != nil {
					return err
				}
			}
			kind, data = "", ""
		case strings.HasPrefix(line, "event:"):
			kind = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			data += strings.TrimSpace(strings.TrimPrefix(line, "data:"))
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	err = sc.Err()
	if err == nil || errors.Is(err, io.ErrUnexpectedEOF) {
		err = errors.New("the server closed the stream")
	}
	return fmt.Errorf("watch: %w", err)
}
