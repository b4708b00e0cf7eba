package httpapi

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// prefectAPIVersion is what GET /api/admin/version answers. Prefect's
// client compares it with its own version: a different major version is
// an error, and (since Prefect 3.1) a lower one a warning in every
// process. allot speaks Prefect 3's API, so it answers a Prefect 3 version
// higher than any Prefect 3 release: clients of every 3.x accept it
// without a warning, and a Prefect 4 client is told the major versions
// differ, which is true of the API.
const prefectAPIVersion = "3.999.0"

// adminVersion is GET /api/admin/version, as Prefect's server answers it:
// the version as a JSON string.
func adminVersion(context.Context, none) (string, error) { return prefectAPIVersion, nil }

// Bounds of the client events websocket.
const (
	// wsMaxMessage bounds one message (all its frames); a Prefect event is
	// a few kilobytes.
	wsMaxMessage = 1 << 20
	// wsIdle is how long a connection may send nothing at all. Prefect's
	// client (the websockets library) pings every 20 s.
	wsIdle = 2 * time.Minute
	// wsWriteTimeout bounds each frame the server writes.
	wsWriteTimeout = 10 * time.Second
)

// The websocket opcodes (RFC 6455 section 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// Close codes (RFC 6455 section 7.4.1).
const (
	closeNormal      = 1000
	closeGoingAway   = 1001
	closeProtocol    = 1002
	closeUnsupported = 1003
	closeInvalidData = 1007
	closeTooBig      = 1009
)

// wsGUID is the key suffix of RFC 6455's handshake.
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// headerHasToken reports whether a comma-separated header has token, in
// any case.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// clientEvents is GET /api/events/in: the websocket on which Prefect's
// client sends its client-side events (PrefectEventsClient). allot keeps
// no events of Prefect's: it checks that each message is a Prefect event,
// counts it by outcome (allot_client_events_total) and drops it, so that
// Prefect's client runs against allot without warnings.
func (h *handler) clientEvents(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	switch k, err := base64.StdEncoding.DecodeString(key); {
	case !headerHasToken(r.Header, "Connection", "upgrade") || !strings.EqualFold(r.Header.Get("Upgrade"), "websocket"):
		h.writeProblem(w, r, &requestError{Code: codeWebsocketRequired,
			Detail: "this is a websocket for Prefect's client events: send Connection: Upgrade and Upgrade: websocket"})
		return
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		w.Header().Set("Sec-WebSocket-Version", "13")
		h.writeProblem(w, r, &requestError{Code: codeWebsocketRequired, Status: http.StatusUpgradeRequired,
			Field: "Sec-WebSocket-Version", Detail: "only websocket version 13 is spoken"})
		return
	case err != nil || len(k) != 16:
		h.writeProblem(w, r, &requestError{Code: codeWebsocketRequired,
			Field: "Sec-WebSocket-Key", Detail: "must be 16 bytes in base64"})
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		h.writeProblem(w, r, err)
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Time{})
	sum := sha1.Sum([]byte(key + wsGUID))
	_ = conn.SetWriteDeadline(time.Now().Add(wsWriteTimeout))
	if _, err := brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		base64.StdEncoding.EncodeToString(sum[:]) + "\r\n\r\n"); err != nil {
		return
	}
	if brw.Flush() != nil {
		return
	}
	ws := &wsConn{conn: conn, r: brw.Reader, w: brw.Writer}
	// A server that shuts down ends the connection, as it ends long polls.
	stop := context.AfterFunc(r.Context(), func() {
		ws.close(closeGoingAway, "server shutting down")
		_ = conn.Close()
	})
	defer stop()
	h.readClientEvents(ws)
}

// readClientEvents reads messages until the client closes or breaks the
// protocol, counting each.
func (h *handler) readClientEvents(ws *wsConn) {
	for {
		op, msg, err := ws.readMessage()
		var ce *wsCloseError
		switch {
		case errors.As(err, &ce):
			ws.close(ce.code, ce.reason)
			return
		case err != nil:
			return // the connection broke or went idle
		case op == opClose:
			code := closeNormal
			if len(msg) >= 2 {
				code = int(binary.BigEndian.Uint16(msg))
			}
			ws.close(echoCode(code), "")
			return
		case op == opBinary:
			h.clientEventCount.WithLabelValues("invalid").Inc()
			ws.close(closeUnsupported, "events are text messages")
			return
		}
		if validPrefectEvent(msg) {
			h.clientEventCount.WithLabelValues("accepted").Inc()
		} else {
			h.clientEventCount.WithLabelValues("invalid").Inc()
		}
	}
}

// validPrefectEvent reports whether msg is a Prefect event as its client
// sends one (Event.model_dump_json()): an object with an id, an event
// name, when it occurred and the resource it is about.
func validPrefectEvent(msg []byte) bool {
	var e struct {
		ID       string          `json:"id"`
		Event    string          `json:"event"`
		Occurred string          `json:"occurred"`
		Resource map[string]any  `json:"resource"`
		Related  json.RawMessage `json:"related"`
	}
	if json.Unmarshal(msg, &e) != nil || e.Event == "" || e.Resource == nil {
		return false
	}
	if _, err := uuid.Parse(e.ID); err != nil {
		return false
	}
	if _, err := time.Parse(time.RFC3339Nano, e.Occurred); err != nil {
		return false
	}
	id, ok := e.Resource["prefect.resource.id"].(string)
	return ok && id != ""
}

// wsConn is the server side of one websocket connection (RFC 6455),
// without extensions: enough to read a client's messages and answer its
// pings and its close.
type wsConn struct {
	conn net.Conn
	r    *bufio.Reader

	mu     sync.Mutex // guards w and closed: a shut-down closes from another goroutine
	w      *bufio.Writer
	closed bool
}

// wsCloseError is a protocol failure that ends the connection with a
// close frame of code.
type wsCloseError struct {
	code   int
	reason string
}

func (e *wsCloseError) Error() string { return e.reason }

// readMessage returns the next text, binary or close message, answering
// pings on the way.
func (c *wsConn) readMessage() (op byte, msg []byte, err error) {
	msgOp := byte(0)
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(wsIdle))
		fin, fop, payload, err := c.readFrame(wsMaxMessage - len(msg))
		if err != nil {
			return 0, nil, err
		}
		switch fop {
		case opPing:
			if err := c.writeFrame(opPong, payload); err != nil {
				return 0, nil, err
			}
			continue
		case opPong:
			continue
		case opClose:
			return opClose, payload, nil
		case opText, opBinary:
			if msgOp != 0 {
				return 0, nil, &wsCloseError{closeProtocol, "a new message inside a fragmented one"}
			}
			msgOp = fop
		case opContinuation:
			if msgOp == 0 {
				return 0, nil, &wsCloseError{closeProtocol, "a continuation without a message"}
			}
		default:
			return 0, nil, &wsCloseError{closeProtocol, "unknown opcode"}
		}
		msg = append(msg, payload...)
		if fin {
			if msgOp == opText && !utf8.Valid(msg) {
				return 0, nil, &wsCloseError{closeInvalidData, "text is not UTF-8"}
			}
			return msgOp, msg, nil
		}
	}
}

// readFrame reads one frame of at most limit payload bytes and unmasks it.
func (c *wsConn) readFrame(limit int) (fin bool, op byte, payload []byte, err error) {
	var hdr [2]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return false, 0, nil, err
	}
	fin, op = hdr[0]&0x80 != 0, hdr[0]&0x0F
	if hdr[0]&0x70 != 0 {
		return false, 0, nil, &wsCloseError{closeProtocol, "no extension was agreed"}
	}
	if hdr[1]&0x80 == 0 {
		return false, 0, nil, &wsCloseError{closeProtocol, "client frames must be masked"}
	}
	n := uint64(hdr[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(c.r, b[:]); err != nil {
			return false, 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(c.r, b[:]); err != nil {
			return false, 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if op >= opClose && (!fin || n > 125) {
		return false, 0, nil, &wsCloseError{closeProtocol, "control frames are short and whole"}
	}
	if n > uint64(max(limit, 125)) {
		return false, 0, nil, &wsCloseError{closeTooBig, "message too big"}
	}
	var mask [4]byte
	if _, err := io.ReadFull(c.r, mask[:]); err != nil {
		return false, 0, nil, err
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(c.r, payload); err != nil {
		return false, 0, nil, err
	}
	for i := range payload {
		payload[i] ^= mask[i%4]
	}
	return fin, op, payload, nil
}

// writeFrame writes one unmasked frame (a server's frames are never
// masked) of at most 125 bytes: the server sends only control frames.
func (c *wsConn) writeFrame(op byte, payload []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	return c.writeFrameLocked(op, payload)
}

func (c *wsConn) writeFrameLocked(op byte, payload []byte) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(wsWriteTimeout))
	if _, err := c.w.Write([]byte{0x80 | op, byte(len(payload))}); err != nil {
		return err
	}
	if _, err := c.w.Write(payload); err != nil {
		return err
	}
	return c.w.Flush()
}

// close sends a close frame once.
func (c *wsConn) close(code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	p := binary.BigEndian.AppendUint16(nil, uint16(code))
	p = append(p, reason[:min(len(reason), 123)]...)
	_ = c.writeFrameLocked(opClose, p)
}

// echoCode is the code to answer a client's close with: its own, unless
// it is one that must never be sent.
func echoCode(code int) int {
	switch {
	case code < 1000 || code > 4999, code >= 1004 && code <= 1006, code == 1015, code > 1015 && code < 3000:
		return closeNormal
	}
	return code
}
