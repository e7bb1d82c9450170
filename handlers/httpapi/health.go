package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// readinessTimeout bounds each dependency check of /readyz.
const readinessTimeout = 2 * time.Second

// status is the body of /healthz and /readyz.
type status struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks,omitempty"`
}

func (a *api) healthz(c *call) error {
	writeJSON(c.w, http.StatusOK, status{Status: "ok"})
	return nil
}

// readyz runs every check at once; a failure names the dependency in the
// answer and logs its error (error texts may hold addresses, so they are not
// sent).
func (a *api) readyz(c *call) error {
	checks := append([]ReadinessCheck{{Name: "store", Check: a.deps.Store.Ping}}, a.deps.Readiness...)
	results := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, chk := range checks {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(c.ctx, readinessTimeout)
			defer cancel()
			results[i] = chk.Check(ctx)
		})
	}
	wg.Wait()
	out := status{Status: "ready", Checks: make(map[string]string, len(checks))}
	var failing []string
	for i, chk := range checks {
		if err := results[i]; err != nil {
			failing = append(failing, chk.Name)
			out.Checks[chk.Name] = "failing"
			a.log.Warn().Err(err).Str("dependency", chk.Name).Msg("readiness check failed")
			continue
		}
		out.Checks[chk.Name] = "ok"
	}
	if len(failing) > 0 {
		return unavailable(fmt.Sprintf("not ready: %s failing", strings.Join(failing, ", ")), nil)
	}
	writeJSON(c.w, http.StatusOK, out)
	return nil
}

func (a *api) metricsHandler(c *call) error {
	a.metricsHTTP.ServeHTTP(c.w, c.r)
	return nil
}
