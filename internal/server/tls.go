package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certReloader serves the certificate in a pair of files and loads it
// again when either file changes (checked every PollInterval) or on a
// signal, without a restart. A pair that fails to load keeps the last good
// one in service, and says so in the log.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.RWMutex
	cert    *tls.Certificate
	modTime [2]time.Time
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *certReloader) stamps() [2]time.Time {
	var out [2]time.Time
	for i, f := range []string{r.certFile, r.keyFile} {
		if fi, err := os.Stat(f); err == nil {
			out[i] = fi.ModTime()
		}
	}
	return out
}

func (r *certReloader) load() error {
	stamps := r.stamps()
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate %s and key %s: %w", r.certFile, r.keyFile, err)
	}
	r.mu.Lock()
	r.cert, r.modTime = &c, stamps
	r.mu.Unlock()
	return nil
}

// getCertificate is tls.Config.GetCertificate.
func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cert, nil
}

// run reloads on a change of the files or a signal on sig, until ctx is
// done.
func (r *certReloader) run(ctx context.Context, poll time.Duration, sig <-chan os.Signal) {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
		case <-t.C:
			r.mu.RLock()
			same := r.stamps() == r.modTime
			r.mu.RUnlock()
			if same {
				continue
			}
		}
		if err := r.load(); err != nil {
			r.log.Error("TLS certificate not reloaded; serving the previous one", "err", err)
			continue
		}
		r.log.Info("TLS certificate reloaded", "cert", r.certFile)
	}
}

// tlsConfig is the server's TLS settings: TLS 1.2 at least, the reloaded
// certificate, and client certificates required and verified against
// clientCA when it is set.
func tlsConfig(r *certReloader, clientCA string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.getCertificate}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, fmt.Errorf("read client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("client CA " + clientCA + ": no PEM certificate in it")
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}
