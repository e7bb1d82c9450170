package domain

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
)

func TestParseSchedule_AcceptsDurationsAndCron(t *testing.T) {
	cases := []struct {
		in       string
		kind     ScheduleKind
		interval time.Duration
	}{
		{"", ScheduleManual, 0},
		{"1m", ScheduleInterval, time.Minute},
		{"1h30m", ScheduleInterval, 90 * time.Minute},
		{"*/5 * * * *", ScheduleCron, 0},
		{"0 3 * * 1-5", ScheduleCron, 0},
		{"15 2 1 JAN,jul *", ScheduleCron, 0},
		{"0 0 29 2 *", ScheduleCron, 0}, // every four years, but it does fire
		{"@hourly", ScheduleCron, 0},
		{"@daily", ScheduleCron, 0},
		{"@midnight", ScheduleCron, 0},
		{"@weekly", ScheduleCron, 0},
		{"@monthly", ScheduleCron, 0},
		{"@yearly", ScheduleCron, 0},
		{"@annually", ScheduleCron, 0},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			s, err := ParseSchedule(tc.in)
			if err != nil {
				t.Fatalf("ParseSchedule(%q) = %v, want a valid schedule", tc.in, err)
			}
			if s.Kind() != tc.kind || s.Interval() != tc.interval {
				t.Errorf("ParseSchedule(%q): kind %d interval %s, want kind %d interval %s", tc.in, s.Kind(), s.Interval(), tc.kind, tc.interval)
			}
		})
	}
}

func TestParseSchedule_RejectsWithAHelpfulMessage(t *testing.T) {
	cases := []struct{ in, wantMsg string }{
		{"59s", "at least 1m0s"},
		{"-5m", "at least 1m0s"},
		{"0s", "at least 1m0s"},
		{"soon", `duration such as "15m"`},
		{"5", `duration such as "15m"`},
		{"* * * *", "not a valid cron expression"},        // 4 fields
		{"0 0 * * * *", "not a valid cron expression"},    // 6 fields (seconds)
		{"60 * * * *", "not a valid cron expression"},     // minute out of range
		{"0 24 * * *", "not a valid cron expression"},     // hour out of range
		{"@sometimes", "not a valid cron expression"},     // unknown descriptor
		{"@every 5m", "write the interval as a duration"}, // not slot-aligned
		{"TZ=Europe/Paris 0 3 * * *", "run in UTC"},
		{"CRON_TZ=UTC 0 3 * * *", "run in UTC"},
		{"0 0 30 2 *", "never fires"},
		{"0 0 31 4,6,9,11 *", "never fires"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			_, err := ParseSchedule(tc.in)
			if err == nil {
				t.Fatalf("ParseSchedule(%q) accepted it, want an error mentioning %q", tc.in, tc.wantMsg)
			}
			if !errors.Is(err, ErrInvalidSchedule) {
				t.Errorf("ParseSchedule(%q) = %v, want it to wrap ErrInvalidSchedule", tc.in, err)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("ParseSchedule(%q) = %q, want a message mentioning %q", tc.in, err, tc.wantMsg)
			}
		})
	}
}

// The spacing rule is checked against a configurable minimum here, since a
// 5-field cron cannot fire more often than the one-minute MinSyncInterval.
func TestParseSchedule_CronSpacingRule(t *testing.T) {
	cases := []struct {
		in      string
		min     time.Duration
		wantErr bool
	}{
		{"*/10 * * * *", 10 * time.Minute, false},
		{"*/5 * * * *", 10 * time.Minute, true},
		{"0,1 * * * *", 2 * time.Minute, true},
		{"0,30 * * * *", 30 * time.Minute, false},
		{"0 0,23 * * *", 2 * time.Hour, true},    // 23:00 then 00:00 the next day
		{"0 0,23 * * 1", 2 * time.Hour, false},   // Mondays only: 23 h, then 6 days 1 h
		{"0 0,23 * * 1,2", 2 * time.Hour, true},  // Monday 23:00 then Tuesday 00:00
		{"0 0,23 31 * *", 2 * time.Hour, false},  // two 31sts are never adjacent
		{"0 0,23 1,31 * *", 2 * time.Hour, true}, // 31 January 23:00 then 1 February 00:00
		{"0 0,12 * * *", 12 * time.Hour, false},
		{"@daily", 24 * time.Hour, false},
		{"@daily", 25 * time.Hour, true},
		{"*/5 * * * *", MinSyncInterval, false}, // the real rule
		{"* * * * *", MinSyncInterval, false},
	}
	for _, tc := range cases {
		t.Run(tc.in+" min "+tc.min.String(), func(t *testing.T) {
			_, err := parseSchedule(tc.in, tc.min)
			switch {
			case tc.wantErr && err == nil:
				t.Fatalf("%q accepted with a %s minimum spacing, want it refused", tc.in, tc.min)
			case tc.wantErr && !strings.Contains(err.Error(), "at least "+tc.min.String()+" apart"):
				t.Errorf("%q: %q, want a message about the %s minimum spacing", tc.in, err, tc.min)
			case !tc.wantErr && err != nil:
				t.Errorf("%q refused with a %s minimum spacing: %v", tc.in, tc.min, err)
			}
		})
	}
}

func TestMinCronGap_IsTheShortestGapBetweenActivations(t *testing.T) {
	const day = 24 * time.Hour
	cases := []struct {
		spec string
		want time.Duration
	}{
		{"* * * * *", time.Minute},
		{"*/15 * * * *", 15 * time.Minute},
		{"0,1 * * * *", time.Minute},
		{"0 * * * *", time.Hour},
		{"0 9-17 * * 1-5", time.Hour},
		{"0 0,23 * * *", time.Hour},
		{"59 23 * * *", day},
		{"0 0 * * 1,3,5", 2 * day},
		{"30 2 * * 1", 7 * day},
		{"0 0 1,31 * *", day}, // 31 January, 1 February
		{"0 0 1 * *", 28 * day},
		{"@yearly", 365 * day},
		{"0 0 29 2 *", 1461 * day}, // leap day to leap day
	}
	for _, tc := range cases {
		t.Run(tc.spec, func(t *testing.T) {
			parsed, err := cron.ParseStandard(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			spec := parsed.(*cron.SpecSchedule)
			spec.Location = time.UTC
			if got := minCronGap(spec); got != tc.want {
				t.Errorf("minCronGap(%q) = %s, want %s", tc.spec, got, tc.want)
			}
		})
	}
}

func TestSchedule_Slot(t *testing.T) {
	utc := func(y int, mo time.Month, d, h, mi, s, ns int) time.Time {
		return time.Date(y, mo, d, h, mi, s, ns, time.UTC)
	}
	ist := time.FixedZone("IST", 5*3600+1800) // +05:30: a local evaluation would land on the half hour
	cases := []struct {
		name, schedule string
		at             time.Time
		slot, next     time.Time
	}{
		{"manual has no slots", "", utc(2025, 6, 1, 10, 7, 30, 0), time.Time{}, time.Time{}},
		{"interval mid-slot", "5m", utc(2025, 6, 1, 10, 7, 30, 0), utc(2025, 6, 1, 10, 5, 0, 0), utc(2025, 6, 1, 10, 10, 0, 0)},
		{"interval at the slot start", "5m", utc(2025, 6, 1, 10, 5, 0, 0), utc(2025, 6, 1, 10, 5, 0, 0), utc(2025, 6, 1, 10, 10, 0, 0)},
		{"interval just before the next", "1h", utc(2025, 6, 1, 10, 59, 59, 999999999), utc(2025, 6, 1, 10, 0, 0, 0), utc(2025, 6, 1, 11, 0, 0, 0)},
		{"cron mid-slot", "*/15 * * * *", utc(2025, 6, 1, 10, 7, 30, 0), utc(2025, 6, 1, 10, 0, 0, 0), utc(2025, 6, 1, 10, 15, 0, 0)},
		{"cron at its activation", "*/15 * * * *", utc(2025, 6, 1, 10, 15, 0, 0), utc(2025, 6, 1, 10, 15, 0, 0), utc(2025, 6, 1, 10, 30, 0, 0)},
		{"cron just before an activation", "*/15 * * * *", utc(2025, 6, 1, 10, 14, 59, 999999999), utc(2025, 6, 1, 10, 0, 0, 0), utc(2025, 6, 1, 10, 15, 0, 0)},
		{"cron daily, before today's run", "0 3 * * *", utc(2025, 6, 1, 2, 0, 0, 0), utc(2025, 5, 31, 3, 0, 0, 0), utc(2025, 6, 1, 3, 0, 0, 0)},
		{"cron weekdays over a weekend", "0 9 * * 1-5", utc(2025, 6, 7, 12, 0, 0, 0), utc(2025, 6, 6, 9, 0, 0, 0), utc(2025, 6, 9, 9, 0, 0, 0)},
		{"cron across the new year", "59 23 31 12 *", utc(2026, 1, 1, 0, 0, 0, 0), utc(2025, 12, 31, 23, 59, 0, 0), utc(2026, 12, 31, 23, 59, 0, 0)},
		{"@hourly", "@hourly", utc(2025, 6, 1, 10, 7, 0, 0), utc(2025, 6, 1, 10, 0, 0, 0), utc(2025, 6, 1, 11, 0, 0, 0)},
		{"@monthly", "@monthly", utc(2025, 3, 15, 8, 0, 0, 0), utc(2025, 3, 1, 0, 0, 0, 0), utc(2025, 4, 1, 0, 0, 0, 0)},
		{"@yearly", "@yearly", utc(2025, 6, 1, 0, 0, 0, 0), utc(2025, 1, 1, 0, 0, 0, 0), utc(2026, 1, 1, 0, 0, 0, 0)},
		{"leap day looks back years", "0 0 29 2 *", utc(2025, 6, 1, 0, 0, 0, 0), utc(2024, 2, 29, 0, 0, 0, 0), utc(2028, 2, 29, 0, 0, 0, 0)},
		// Europe skips 02:00-03:00 local on 30 March 2025; UTC cron does not.
		{"UTC cron ignores DST", "30 2 * * *", utc(2025, 3, 30, 2, 45, 0, 0), utc(2025, 3, 30, 2, 30, 0, 0), utc(2025, 3, 31, 2, 30, 0, 0)},
		{"cron evaluates a zoned time in UTC", "0 * * * *", time.Date(2025, 6, 1, 15, 37, 0, 0, ist), utc(2025, 6, 1, 10, 0, 0, 0), utc(2025, 6, 1, 11, 0, 0, 0)},
		{"interval returns UTC for a zoned time", "1h", time.Date(2025, 6, 1, 15, 37, 0, 0, ist), utc(2025, 6, 1, 10, 0, 0, 0), utc(2025, 6, 1, 11, 0, 0, 0)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSchedule(tc.schedule)
			if err != nil {
				t.Fatal(err)
			}
			slot, next := s.Slot(tc.at)
			if !slot.Equal(tc.slot) || !next.Equal(tc.next) {
				t.Errorf("%q at %s: slot %s next %s, want slot %s next %s", tc.schedule, tc.at, slot, next, tc.slot, tc.next)
			}
			if !slot.IsZero() && slot.Location() != time.UTC {
				t.Errorf("slot %s is not in UTC; run ids are derived from it", slot)
			}
		})
	}
}

// Slot's backward search must agree with robfig/cron's forward Next: the slot
// is an activation, no activation lies between it and t, and next follows it.
func TestSchedule_SlotAgreesWithCronNext(t *testing.T) {
	specs := []string{"* * * * *", "*/7 * * * *", "0 9-17 * * 1-5", "0 0,23 * * *", "30 2 1,15 * *", "@weekly", "@monthly", "0 0 29 2 *", "5 4 * 2 0"}
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, spec := range specs {
		s, err := ParseSchedule(spec)
		if err != nil {
			t.Fatal(err)
		}
		for range 200 {
			at := base.Add(time.Duration(rng.Int64N(int64(10 * 365 * 24 * time.Hour))))
			slot, next := s.Slot(at)
			if slot.IsZero() || slot.After(at) || !next.After(at) {
				t.Fatalf("%q at %s: slot %s next %s, want slot <= t < next", spec, at, slot, next)
			}
			if got := s.spec.Next(slot.Add(-time.Second)); !got.Equal(slot) {
				t.Fatalf("%q at %s: slot %s is not an activation (first one from there is %s)", spec, at, slot, got)
			}
			if got := s.spec.Next(slot); !got.Equal(next) {
				t.Fatalf("%q at %s: an activation %s lies between slot %s and next %s", spec, at, got, slot, next)
			}
		}
	}
}
