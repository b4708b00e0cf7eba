//go:build !linux

package postgres

import (
	"syscall"
	"time"
)

// setUserTimeout does nothing where TCP_USER_TIMEOUT does not exist;
// keepalives still notice a silent peer.
func setUserTimeout(time.Duration) func(network, address string, c syscall.RawConn) error {
	return nil
}
