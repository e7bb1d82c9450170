package webhook

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
	"golang.org/x/time/rate"
)

// errNotAttempted tells the breaker an admitted request was not made after
// all (deferred, or interrupted on our side): it counts neither way.
var errNotAttempted = errors.New("not attempted")

// errAttemptFailed is what the breaker is told of a failed attempt.
var errAttemptFailed = errors.New("attempt failed")

// Deferral reasons, also the metric's label.
const (
	deferBreakerOpen     = "breaker_open"
	deferBreakerHalfOpen = "breaker_half_open"
	deferInFlight        = "in_flight"
	deferRateLimited     = "rate_limited"
)

// deferral says a delivery must wait without being attempted.
type deferral struct {
	reason string
	delay  time.Duration
}

// healthTracker keeps each endpoint's in-process gatekeepers: the in-flight
// count, the circuit breaker and the rate limiter. Nothing here waits: an
// attempt that cannot go now is deferred through the Delayer, so a slow or
// dead endpoint holds at most MaxInFlightPerEndpoint consumers and never
// blocks the deliveries of the others.
type healthTracker struct {
	opts      Options
	onCircuit func(from, to gobreaker.State)

	mu        sync.Mutex
	states    map[string]*endpointState
	lastSweep time.Time
}

type endpointState struct {
	mu       sync.Mutex
	inFlight int
	freed    chan struct{} // closed (and dropped) when an attempt ends; nil: nobody waits
	rps      float64
	limiter  *rate.Limiter // nil: no limit
	breaker  *gobreaker.TwoStepCircuitBreaker[struct{}]
	lastUsed time.Time
	// How long the endpoint's attempts take (a moving average; 0: none
	// seen), and when the last delivery deferred at the in-flight bound is
	// due to find a place (busyDelay).
	attemptTook time.Duration
	admittedAt  time.Time // the latest attempt's start
	placeFreeAt time.Time
}

// stateIdleAfter: an endpoint's state unused this long, with nothing in
// flight and its breaker closed, is forgotten.
const stateIdleAfter = 10 * time.Minute

// newHealthTracker keeps per-endpoint state; onCircuit (may be nil) hears every
// breaker transition.
func newHealthTracker(opts Options, onCircuit func(from, to gobreaker.State)) *healthTracker {
	return &healthTracker{opts: opts, states: make(map[string]*endpointState), onCircuit: onCircuit}
}

func (h *healthTracker) state(key string, now time.Time) *endpointState {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.Sub(h.lastSweep) > time.Minute {
		h.sweep(now)
	}
	st, ok := h.states[key]
	if !ok {
		failures := uint32(h.opts.BreakerFailures)
		st = &endpointState{breaker: gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
			Name:        key,
			MaxRequests: 1, // one probe when half-open
			Timeout:     h.opts.BreakerCooldown,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
			IsExcluded:  func(err error) bool { return errors.Is(err, errNotAttempted) },
			OnStateChange: func(_ string, from, to gobreaker.State) {
				if h.onCircuit != nil {
					h.onCircuit(from, to)
				}
			},
		})}
		h.states[key] = st
	}
	return st
}

func (h *healthTracker) sweep(now time.Time) {
	for k, st := range h.states {
		st.mu.Lock()
		idle := st.inFlight == 0 && now.Sub(st.lastUsed) > stateIdleAfter && st.breaker.State() == gobreaker.StateClosed
		st.mu.Unlock()
		if idle {
			delete(h.states, k)
		}
	}
	h.lastSweep = now
}

// acquire admits an attempt to the endpoint, or says how long to defer it.
// The checks cost nothing when they pass: the in-flight bound, then the
// breaker, then the rate limiter (so a deferred attempt spends no token).
//
// At the in-flight bound it waits up to InFlightWait for one of the
// endpoint's attempts to end before deferring: a busy but quick endpoint then
// gets its deliveries in turn instead of bouncing them through the delay
// queue, while a slow one costs each of its waiting deliveries at most that
// long on a consumer.
func (h *healthTracker) acquire(ctx context.Context, key string, rps float64, now time.Time) (*lease, *deferral) {
	st := h.state(key, now)
	var timeout <-chan time.Time
	for {
		st.mu.Lock()
		if st.inFlight < h.opts.MaxInFlightPerEndpoint {
			break // keeps st.mu
		}
		if h.opts.InFlightWait <= 0 {
			st.lastUsed = now
			delay := st.busyDelay(now, h.opts)
			st.mu.Unlock()
			return nil, &deferral{deferInFlight, delay}
		}
		if st.freed == nil {
			st.freed = make(chan struct{})
		}
		freed := st.freed
		st.mu.Unlock()
		if timeout == nil {
			t := time.NewTimer(h.opts.InFlightWait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-freed:
			continue
		case <-timeout:
		case <-ctx.Done():
		}
		st.mu.Lock()
		st.lastUsed = now
		delay := st.busyDelay(now, h.opts)
		st.mu.Unlock()
		return nil, &deferral{deferInFlight, delay}
	}
	defer st.mu.Unlock()
	st.lastUsed = now
	done, err := st.breaker.Allow()
	if errors.Is(err, gobreaker.ErrOpenState) {
		return nil, &deferral{deferBreakerOpen, h.opts.BreakerCooldown}
	}
	if err != nil { // half-open and its probe is out
		return nil, &deferral{deferBreakerHalfOpen, h.opts.DeferDelay}
	}
	if st.setRate(rps); st.limiter != nil && !st.limiter.AllowN(now, 1) {
		done(errNotAttempted)
		return nil, &deferral{deferRateLimited, max(h.opts.DeferDelay, time.Duration(float64(time.Second)/rps))}
	}
	st.inFlight++
	st.admittedAt = now
	return &lease{st: st, done: done}, nil
}

// busyDelay is how long a delivery deferred at the in-flight bound waits.
// The endpoint frees a place about every attemptTook/MaxInFlightPerEndpoint,
// so each deferral is given the next such turn after the ones already given:
// a slow endpoint's waiting deliveries come back about when a place is free,
// instead of each of them every DeferDelay (a broker round trip per waiting
// delivery per DeferDelay, for as long as the backlog lasts). Until an
// attempt has ended, no place has freed since the latest one started: that
// long is the pace so far. At least DeferDelay, at most BreakerCooldown: a
// busy endpoint's delivery waits no longer than a tripped one's. Call with
// st.mu held, at the bound (so an attempt was admitted).
func (st *endpointState) busyDelay(now time.Time, o Options) time.Duration {
	pace := max(st.attemptTook, now.Sub(st.admittedAt))
	turn := pace / time.Duration(o.MaxInFlightPerEndpoint)
	st.placeFreeAt = st.placeFreeAt.Add(turn)
	if st.placeFreeAt.Before(now) {
		st.placeFreeAt = now.Add(turn)
	}
	if latest := now.Add(o.BreakerCooldown); st.placeFreeAt.After(latest) {
		st.placeFreeAt = latest
	}
	return min(max(st.placeFreeAt.Sub(now), o.DeferDelay), o.BreakerCooldown)
}

// attemptTookWeight is the weight of the latest attempt in attemptTook.
const attemptTookWeight = 0.2

// setRate follows the endpoint's rateLimitPerSecond as its document changes.
func (st *endpointState) setRate(rps float64) {
	if rps == st.rps {
		return
	}
	st.rps = rps
	if rps <= 0 {
		st.limiter = nil
		return
	}
	burst := max(1, int(rps))
	if st.limiter == nil {
		st.limiter = rate.NewLimiter(rate.Limit(rps), burst)
		return
	}
	st.limiter.SetLimit(rate.Limit(rps))
	st.limiter.SetBurst(burst)
}

// lease is one admitted attempt; release it exactly once with the outcome:
// nil (delivered), errAttemptFailed, or errNotAttempted, and how long the
// attempt took (ignored when it was not made).
type lease struct {
	st   *endpointState
	done func(error)
}

func (l *lease) release(outcome error, took time.Duration) {
	l.done(outcome)
	l.st.mu.Lock()
	if !errors.Is(outcome, errNotAttempted) && took > 0 {
		if l.st.attemptTook == 0 {
			l.st.attemptTook = took
		} else {
			l.st.attemptTook += time.Duration(attemptTookWeight * float64(took-l.st.attemptTook))
		}
	}
	l.st.inFlight--
	if l.st.freed != nil {
		close(l.st.freed) // wake who waits for a place
		l.st.freed = nil
	}
	l.st.mu.Unlock()
}
