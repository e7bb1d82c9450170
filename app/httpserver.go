package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/rs/zerolog"
)

// httpServer is a listening server; Addr is the address it really bound
// (useful with ":0").
type httpServer struct {
	srv  *http.Server
	ln   net.Listener
	Addr string
}

// listenHTTP binds addr now, so a port clash stops start-up with the key named.
func listenHTTP(key, addr string, h http.Handler, readTimeout, writeTimeout time.Duration, logger zerolog.Logger) (*httpServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen on %s: %w", key, addr, err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          newStdLogger(logger),
	}
	return &httpServer{srv: srv, ln: ln, Addr: ln.Addr().String()}, nil
}

// serve runs until ctx ends, then lets in-flight requests finish within grace.
func (s *httpServer) serve(ctx context.Context, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server %s: %w", s.Addr, err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	if err := s.srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http server %s shutdown: %w", s.Addr, err)
	}
	return nil
}
