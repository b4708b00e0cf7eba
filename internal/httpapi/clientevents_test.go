package httpapi_test

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// wsClient is a hand-written websocket client (RFC 6455), as Prefect's
// client speaks to /api/events/in: masked frames, pings, close.
type wsClient struct {
	t  *testing.T
	rc *rawConn
}

func dialEventsIn(t *testing.T, b *testBundle) *wsClient {
	t.Helper()
	rc := dialRaw(t, b)
	if err := rc.c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	fmt.Fprintf(rc.c, "GET /api/events/in HTTP/1.1\r\nHost: allot\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n", key)
	req, _ := http.NewRequest("GET", "/api/events/in", nil)
	resp, err := http.ReadResponse(rc.br, req)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) ||
		!strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") || resp.Header.Get("Sec-WebSocket-Extensions") != "" {
		t.Fatalf("handshake answer %d %v, want 101 with the accept key and no extension", resp.StatusCode, resp.Header)
	}
	return &wsClient{t: t, rc: rc}
}

// send writes one masked frame.
func (c *wsClient) send(fin bool, op byte, payload []byte) {
	c.t.Helper()
	b0 := op
	if fin {
		b0 |= 0x80
	}
	hdr := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n < 1<<16:
		hdr = append(hdr, 0x80|126)
		hdr = binary.BigEndian.AppendUint16(hdr, uint16(n))
	default:
		hdr = append(hdr, 0x80|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	mask := []byte{0x37, 0xfa, 0x21, 0x3d}
	masked := make([]byte, len(payload))
	for i := range payload {
		masked[i] = payload[i] ^ mask[i%4]
	}
	if _, err := c.rc.c.Write(append(append(hdr, mask...), masked...)); err != nil {
		c.t.Fatalf("write frame: %v", err)
	}
}

// recv reads one server frame, which must be unmasked.
func (c *wsClient) recv() (op byte, payload []byte) {
	c.t.Helper()
	var hdr [2]byte
	if _, err := io.ReadFull(c.rc.br, hdr[:]); err != nil {
		c.t.Fatalf("read frame: %v", err)
	}
	if hdr[1]&0x80 != 0 || hdr[1]&0x7F > 125 {
		c.t.Fatalf("server frame header %x: masked or long", hdr)
	}
	payload = make([]byte, hdr[1]&0x7F)
	if _, err := io.ReadFull(c.rc.br, payload); err != nil {
		c.t.Fatalf("read payload: %v", err)
	}
	return hdr[0] & 0x0F, payload
}

// wantClose reads a close frame with code, then the end of the connection.
func (c *wsClient) wantClose(code uint16) {
	c.t.Helper()
	op, p := c.recv()
	if op != 0x8 || len(p) < 2 || binary.BigEndian.Uint16(p) != code {
		c.t.Fatalf("got frame %x %q, want close %d", op, p, code)
	}
	if _, err := c.rc.br.ReadByte(); err != io.EOF {
		c.t.Errorf("after close: %v, want the connection closed", err)
	}
}

// sync pings and waits for the pong: every message sent before has been
// read.
func (c *wsClient) sync() {
	c.t.Helper()
	c.send(true, 0x9, []byte("sync"))
	if op, p := c.recv(); op != 0xA || string(p) != "sync" {
		c.t.Fatalf("got frame %x %q, want pong sync", op, p)
	}
}

const prefectEvent = `{"occurred":"2026-12-07T11:00:00.123456Z","event":"prefect.concurrency-limit.acquired",` +
	`"resource":{"prefect.resource.id":"prefect.concurrency-limit.0b9e6ab4-6a44-4c1f-8d49-6f1f0c3a0b6e","prefect.resource.name":"db"},` +
	`"related":[],"payload":{},"id":"5a1b6c1e-3c39-4d6f-9d35-0a8f1f0c3b11","follows":null}`

func clientEventCounts(t *testing.T, b *testBundle) (accepted, invalid string) {
	t.Helper()
	body := string(b.do(t, "GET", "/metrics", nil).want(t, 200).body)
	find := func(outcome string) string {
		m := regexp.MustCompile(`(?m)^allot_client_events_total\{outcome="` + outcome + `"\} (\S+)$`).FindStringSubmatch(body)
		if m == nil {
			return "0"
		}
		return m[1]
	}
	return find("accepted"), find("invalid")
}

func TestPrefectClientEventsWebsocket(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := dialEventsIn(t, b)
	c.sync() // Prefect's client pings first to check the connection
	c.send(true, 0x1, []byte(prefectEvent))
	c.send(true, 0x1, []byte(`{"event":"no id"}`))
	c.send(true, 0x1, []byte(`not json`))
	// A fragmented event, with a ping between its frames.
	c.send(false, 0x1, []byte(prefectEvent[:40]))
	c.send(true, 0x9, []byte("mid"))
	if op, p := c.recv(); op != 0xA || string(p) != "mid" {
		t.Fatalf("got %x %q, want pong mid", op, p)
	}
	c.send(true, 0x0, []byte(prefectEvent[40:]))
	big := strings.Replace(prefectEvent, `"payload":{}`, `"payload":{"pad":"`+strings.Repeat("x", 70000)+`"}`, 1)
	c.send(true, 0x1, []byte(big))
	c.sync()
	if acc, inv := clientEventCounts(t, b); acc != "3" || inv != "2" {
		t.Errorf("allot_client_events_total accepted %s invalid %s, want 3 and 2", acc, inv)
	}
	c.send(true, 0x8, binary.BigEndian.AppendUint16(nil, 1000))
	c.wantClose(1000)
}

func TestPrefectClientEventsWebsocketRefusesBadFrames(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, tc := range []struct {
		name string
		send func(c *wsClient)
		code uint16
	}{
		{"unmasked", func(c *wsClient) { _, _ = c.rc.c.Write([]byte{0x81, 0x02, 'h', 'i'}) }, 1002},
		{"too big", func(c *wsClient) {
			_, _ = c.rc.c.Write(binary.BigEndian.AppendUint64([]byte{0x81, 0x80 | 127}, 2<<20))
		}, 1009},
		{"binary", func(c *wsClient) { c.send(true, 0x2, []byte{1, 2}) }, 1003},
		{"not utf-8", func(c *wsClient) { c.send(true, 0x1, []byte{0xff, 0xfe}) }, 1007},
		{"reserved bits", func(c *wsClient) { c.send(true, 0x1|0x40, []byte("{}")) }, 1002},
		{"continuation first", func(c *wsClient) { c.send(true, 0x0, []byte("{}")) }, 1002},
		{"long ping", func(c *wsClient) { c.send(true, 0x9, make([]byte, 200)) }, 1002},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := dialEventsIn(t, b)
			tc.send(c)
			c.wantClose(tc.code)
		})
	}
}

func TestPrefectClientEventsNeedsAWebsocket(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.do(t, "GET", "/api/events/in", nil).wantProblem(t, http.StatusBadRequest, "websocket_required", "")
	req, _ := http.NewRequest("GET", b.srv.URL+"/api/events/in", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "8")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	resp, err := b.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired || resp.Header.Get("Sec-WebSocket-Version") != "13" {
		t.Errorf("version 8: %d %q, want 426 naming version 13", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Version"))
	}
}

// TestPrefectClientProbes pins what Prefect's client reads at start:
// /api/csrf-token must stay 404 (Prefect's client reads it as "CSRF
// protection off"), and /api/admin/version a Prefect 3 version string no
// lower than any Prefect 3 client's, so that it warns of nothing.
func TestPrefectClientProbes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.do(t, "GET", "/api/csrf-token?client=abc", nil).want(t, http.StatusNotFound)
	if got := decode[string](t, b.do(t, "GET", "/api/admin/version", nil).want(t, 200)); got != "3.999.0" {
		t.Errorf("admin/version %q, want \"3.999.0\"", got)
	}
}
