package webhook

import (
	"testing"
	"time"
)

func TestBusyDelay_SpreadsDeferralsOverTheEndpointsTurns(t *testing.T) {
	opts := Options{MaxInFlightPerEndpoint: 2, DeferDelay: time.Second, BreakerCooldown: 30 * time.Second}
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name        string
		attemptTook time.Duration
		admittedAgo time.Duration // the latest attempt started this long ago
		deferrals   int           // in a row, at now
		want        []time.Duration
	}{
		{"a quick endpoint's deferrals wait DeferDelay", 10 * time.Millisecond, 0, 3,
			[]time.Duration{time.Second, time.Second, time.Second}},
		{"a slow endpoint's: one turn (attempt / places) after another", 10 * time.Second, 0, 4,
			[]time.Duration{5 * time.Second, 10 * time.Second, 15 * time.Second, 20 * time.Second}},
		{"never longer than the breaker's cool-down", 40 * time.Second, 0, 3,
			[]time.Duration{20 * time.Second, 30 * time.Second, 30 * time.Second}},
		{"no attempt ended yet: the latest one's age is the pace so far", 0, 6 * time.Second, 2,
			[]time.Duration{3 * time.Second, 6 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &endpointState{attemptTook: tc.attemptTook, admittedAt: now.Add(-tc.admittedAgo)}
			for i := range tc.deferrals {
				if got := st.busyDelay(now, opts); got != tc.want[i] {
					t.Errorf("deferral %d: waits %v, want %v", i+1, got, tc.want[i])
				}
			}
		})
	}

	t.Run("turns already past are not waited for", func(t *testing.T) {
		st := &endpointState{attemptTook: 10 * time.Second, admittedAt: now}
		st.busyDelay(now, opts)
		st.busyDelay(now, opts)
		later := now.Add(time.Minute)
		st.admittedAt = later.Add(-time.Second)
		if got := st.busyDelay(later, opts); got != 5*time.Second {
			t.Errorf("a minute later: waits %v, want one turn (5s)", got)
		}
	})
}
