package postgres

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Connection settings that make a dead or stalled peer noticed in seconds
// rather than never, on both ends of every connection.
const (
	// connectTimeout bounds a connection attempt.
	connectTimeout = 5 * time.Second
	// tcpUserTimeout is how long sent data may stay unacknowledged before
	// the kernel drops the connection (TCP_USER_TIMEOUT, Linux).
	tcpUserTimeout = 5 * time.Second
	// keepAliveIdle, keepAliveInterval and keepAliveCount probe an idle
	// connection: a silent peer is dropped after about idle +
	// interval×count.
	keepAliveIdle     = 2 * time.Second
	keepAliveInterval = time.Second
	keepAliveCount    = 3
	// idleInTransaction ends a session that stalls inside a transaction,
	// so that a paused leader cannot hold the leader row's lock: PostgreSQL
	// rolls the transaction back and closes the session.
	idleInTransaction = 5 * time.Second
)

// PoolConfig parses url and returns a pool configuration with allot's
// settings on every connection: the schema (if any) as search_path, the
// application name (if any), TCP keepalives and TCP_USER_TIMEOUT on the
// replica's side and PostgreSQL's, and idle_in_transaction_session_timeout.
// Settings named in url itself win over these defaults.
func PoolConfig(url, schema, applicationName string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	configureConn(cfg.ConnConfig, schema, applicationName)
	return cfg, nil
}

// ConnConfig is PoolConfig for a single connection.
func ConnConfig(url, schema, applicationName string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	configureConn(cfg, schema, applicationName)
	return cfg, nil
}

func configureConn(cfg *pgx.ConnConfig, schema, applicationName string) {
	set := func(k, v string) {
		if _, ok := cfg.RuntimeParams[k]; !ok {
			cfg.RuntimeParams[k] = v
		}
	}
	if schema != "" {
		cfg.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
	}
	if applicationName != "" {
		cfg.RuntimeParams["application_name"] = applicationName
	}
	ms := func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }
	set("idle_in_transaction_session_timeout", ms(idleInTransaction))
	// PostgreSQL's end: notice a dead replica, end its session and free
	// its advisory lock.
	set("tcp_keepalives_idle", strconv.Itoa(int(keepAliveIdle.Seconds())))
	set("tcp_keepalives_interval", strconv.Itoa(int(keepAliveInterval.Seconds())))
	set("tcp_keepalives_count", strconv.Itoa(keepAliveCount))
	set("tcp_user_timeout", ms(tcpUserTimeout))
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = connectTimeout
	}
	// The replica's end.
	d := &net.Dialer{
		Timeout: cfg.ConnectTimeout,
		KeepAliveConfig: net.KeepAliveConfig{
			Enable: true, Idle: keepAliveIdle, Interval: keepAliveInterval, Count: keepAliveCount,
		},
		Control: setUserTimeout(tcpUserTimeout),
	}
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}
}
