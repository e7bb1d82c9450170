package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/config"
)

// run serves until ctx ends or a part fails, then stops in order: HTTP servers
// first (no new commands), then the router (in-flight messages finish or return
// to their queues). The caller closes the transport and the store afterwards.
func run(ctx context.Context, cfg *config.Config, logger zerolog.Logger, router *message.Router, servers []*httpServer, loops []func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var wg sync.WaitGroup
	errs := make(chan error, len(servers)+len(loops)+2)
	for _, loop := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := loop(ctx); err != nil && !errors.Is(err, context.Canceled) {
				errs <- err
				cancel()
			}
		}()
	}
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.serve(ctx, cfg.HTTP.API.ShutdownTimeout); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	routerDone := make(chan struct{})
	go func() {
		defer close(routerDone)
		if err := router.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			errs <- fmt.Errorf("message router: %w", err)
			cancel()
		}
	}()
	select {
	case <-router.Running():
		logger.Info().Msg("ready")
	case <-ctx.Done():
	}

	<-ctx.Done()
	logger.Info().Msg("shutting down")
	wg.Wait()
	if err := router.Close(); err != nil {
		errs <- fmt.Errorf("close router: %w", err)
	}
	<-routerDone
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// drainTimeout is how long a message in hand may still run after SIGTERM
// before it is nacked back to its queue and its handler's context is cancelled
// (an interrupted webhook attempt is then not recorded, so it costs no attempt):
// shutdown.timeout less a reserve for that, so the router closes in time and the
// process still exits 0 within shutdown.timeout.
func drainTimeout(shutdown time.Duration) time.Duration {
	return shutdown - min(shutdown/10, 2*time.Second)
}

// displayAddr turns a listen address into one a person can paste (":8080" → "localhost:8080").
func displayAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
