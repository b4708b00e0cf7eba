package sqlite

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
)

// stmt is a statement prepared on the driver's connection, below
// database/sql. Commit runs every batch through such statements: executing
// one takes none of database/sql's locks, converts no arguments and rebinds
// nothing to a transaction, and its argument list is kept from one
// execution to the next.
//
// A stmt belongs to the driver connection that prepared it and may be used
// only inside (*sql.Conn).Raw on that connection.
type stmt struct {
	ds   driver.Stmt
	exec driver.StmtExecContext
	args []driver.NamedValue
}

// prepare prepares query on c, the driver connection (*sql.Conn).Raw hands
// out.
func prepare(ctx context.Context, c any, query string) (*stmt, error) {
	pc, ok := c.(driver.ConnPrepareContext)
	if !ok {
		return nil, fmt.Errorf("driver connection %T cannot prepare with a context", c)
	}
	ds, err := pc.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	exec, ok := ds.(driver.StmtExecContext)
	if !ok {
		_ = ds.Close() // the missing method is the error to report
		return nil, fmt.Errorf("driver statement %T cannot execute with a context", ds)
	}
	return &stmt{ds: ds, exec: exec}, nil
}

// run executes the statement with args, which bind to its parameters in
// order. It is run without a context: with one, the driver would watch it
// from a goroutine of its own for every statement. Commit checks its
// context between statements instead.
//
// The driver copies the arguments' bytes as it binds them, so a buffer
// passed in may be reused once run returns.
func (st *stmt) run(args ...any) error {
	for i, v := range args {
		st.args = append(st.args, driver.NamedValue{Ordinal: i + 1, Value: v})
	}
	_, err := st.exec.ExecContext(context.Background(), st.args)
	clear(st.args) // keep nothing of the caller's
	st.args = st.args[:0]
	return err
}

// closeStmts closes the statements that are not nil.
func closeStmts(sts ...*stmt) error {
	var errs []error
	for _, st := range sts {
		if st != nil {
			errs = append(errs, st.ds.Close())
		}
	}
	return errors.Join(errs...)
}

// blob is a BLOB argument that is reused from one execution to the next.
// Passing a []byte to the driver converts it to an interface, which
// allocates; a blob converts again only when the length changes.
type blob struct {
	buf []byte
	arg any // buf, converted
}

// set returns the argument, now holding a copy of b. It stays valid until
// the next set. A set of an empty b gives an empty BLOB, not NULL.
func (a *blob) set(b []byte) any {
	if a.arg != nil && len(b) == len(a.buf) {
		copy(a.buf, b)
		return a.arg
	}
	a.buf = append(a.buf[:0], b...) // the driver has copied what buf held
	if a.buf == nil {
		a.buf = []byte{}
	}
	a.arg = a.buf
	return a.arg
}
