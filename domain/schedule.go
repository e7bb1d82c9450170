package domain

import (
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// ErrInvalidSchedule is wrapped by every ParseSchedule error.
var ErrInvalidSchedule = errors.New("invalid schedule")

// ScheduleKind says how a schedule's slots are laid out.
type ScheduleKind int

const (
	ScheduleManual   ScheduleKind = iota // no schedule: runs only on request
	ScheduleInterval                     // a Go duration: slots are time truncated to it
	ScheduleCron                         // a 5-field cron expression, evaluated in UTC
)

// Schedule is a parsed SyncTask.Schedule. The zero value is manual.
type Schedule struct {
	kind  ScheduleKind
	every time.Duration
	spec  *cron.SpecSchedule
}

// cronExample is quoted by the error messages.
const cronExample = `"*/15 * * * *" or "@hourly"`

// ParseSchedule parses a task schedule: "" (manual), a Go duration of at
// least MinSyncInterval ("15m"), or a standard 5-field cron expression
// ("0 */6 * * *", or a descriptor such as "@hourly", "@daily", "@weekly")
// whose consecutive activations are at least MinSyncInterval apart. Cron
// expressions are evaluated in UTC, so there is no DST; time zone prefixes and
// "@every" are refused. Errors wrap ErrInvalidSchedule and read as a message
// about the schedule field.
func ParseSchedule(s string) (Schedule, error) {
	return parseSchedule(s, MinSyncInterval)
}

func parseSchedule(s string, minSpacing time.Duration) (Schedule, error) {
	if s == "" {
		return Schedule{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < minSpacing {
			return Schedule{}, scheduleErrorf("must be at least %s", minSpacing)
		}
		return Schedule{kind: ScheduleInterval, every: d}, nil
	}
	trimmed := strings.TrimSpace(s)
	if !strings.HasPrefix(trimmed, "@") && !strings.ContainsAny(trimmed, " \t") {
		return Schedule{}, scheduleErrorf("must be a duration such as \"15m\" or a 5-field cron expression such as %s", cronExample)
	}
	// Checked before parsing: the parser would load the zone from disk, and a
	// zone brings DST, whose skipped and repeated hours make slots ambiguous.
	if strings.HasPrefix(trimmed, "TZ=") || strings.HasPrefix(trimmed, "CRON_TZ=") {
		return Schedule{}, scheduleErrorf("must not name a time zone; cron schedules run in UTC")
	}
	if strings.HasPrefix(trimmed, "@every") {
		return Schedule{}, scheduleErrorf("must not use @every; write the interval as a duration such as \"15m\"")
	}
	parsed, err := cron.ParseStandard(trimmed)
	if err != nil {
		return Schedule{}, scheduleErrorf("is not a valid cron expression (%v); use 5 fields such as %s", err, cronExample)
	}
	spec, ok := parsed.(*cron.SpecSchedule)
	if !ok { // cannot happen after the @every check; guards a library change
		return Schedule{}, scheduleErrorf("is not a supported cron expression; use 5 fields such as %s", cronExample)
	}
	utc := *spec // a copy: the parser's value is not ours to change
	utc.Location = time.UTC
	if utc.Next(cronReference).IsZero() {
		return Schedule{}, scheduleErrorf("never fires (no date matches its day and month fields)")
	}
	within, wrap, ok := cronDayGaps(&utc)
	if !ok { // cannot happen with the standard parser; guards a library change
		return Schedule{}, scheduleErrorf("is not a supported cron expression; use 5 fields such as %s", cronExample)
	}
	// The calendar scan in minCronGap runs only when a gap could be too short.
	if min(within, wrap) < minSpacing {
		if gap := minCronGap(&utc); gap < minSpacing {
			return Schedule{}, scheduleErrorf("fires %s apart at times; consecutive runs must be at least %s apart", gap, minSpacing)
		}
	}
	return Schedule{kind: ScheduleCron, spec: &utc}, nil
}

func scheduleErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidSchedule}, args...)...)
}

// scheduleMessage is err's text without the sentinel prefix, for a field error.
func scheduleMessage(err error) string {
	return strings.TrimPrefix(err.Error(), ErrInvalidSchedule.Error()+": ")
}

// Kind returns the schedule's kind.
func (s Schedule) Kind() ScheduleKind { return s.kind }

// Interval returns an interval schedule's duration, 0 for the other kinds.
func (s Schedule) Interval() time.Duration { return s.every }

// Slot returns the start of the slot t belongs to and the start of the slot
// after it, both in UTC. An interval's slots are t truncated to the interval
// (aligned to Go's zero time, so "1h" starts on the hour); a cron slot starts
// at the latest activation at or before t. The slot start identifies a
// scheduled run (ScheduledRunID). Both are zero for a manual schedule; slot is
// zero when a cron expression has not fired in the five years before t.
func (s Schedule) Slot(t time.Time) (slot, next time.Time) {
	t = t.UTC()
	switch s.kind {
	case ScheduleInterval:
		slot = t.Truncate(s.every)
		return slot, slot.Add(s.every)
	case ScheduleCron:
		// Activations fall on whole minutes, so whole seconds lose nothing.
		u := t.Truncate(time.Second)
		return prevActivation(s.spec, u), s.spec.Next(u)
	default:
		return time.Time{}, time.Time{}
	}
}

// cronLookback bounds the search for the previous activation; it matches the
// five years robfig/cron's Next searches forward.
const cronLookback = 5 * 366 * 24 * time.Hour

// prevActivation returns spec's latest activation at or before u (a whole
// second), or zero. Next only looks forward, so it widens a window back from
// u until an activation falls in it, then halves the window down to a minute.
func prevActivation(spec *cron.SpecSchedule, u time.Time) time.Time {
	// atOrAfter is the first activation at or after x (a whole second).
	atOrAfter := func(x time.Time) time.Time { return spec.Next(x.Add(-time.Second)) }
	within := func(a time.Time) bool { return !a.IsZero() && !a.After(u) }
	var lo time.Time
	for back := time.Hour; ; back *= 2 {
		back = min(back, cronLookback)
		if lo = u.Add(-back); within(atOrAfter(lo)) {
			break
		}
		if back == cronLookback {
			return time.Time{}
		}
	}
	// Invariant: an activation lies in [lo, u].
	for hi := u; hi.Sub(lo) > time.Minute; {
		mid := lo.Add((hi.Sub(lo) / 2).Truncate(time.Second))
		if within(atOrAfter(mid)) {
			lo = mid
		} else {
			hi = mid
		}
	}
	a := atOrAfter(lo)
	for n := spec.Next(a); within(n); n = spec.Next(a) {
		a = n
	}
	return a
}

// cronReference starts the calendar scan; 2001-2028 holds every combination
// of weekday, day of month and leap year that 1901-2099 does.
var cronReference = time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)

const cronScanYears = 28

// cronDayGaps returns, for spec's times of day (evaluated in UTC), the
// shortest gap between two of them within a day and the gap from the last one
// to the first one of the next calendar day. ok is false when spec is not a
// standard 5-field schedule (the parser always fixes one second).
func cronDayGaps(spec *cron.SpecSchedule) (within, wrap time.Duration, ok bool) {
	var tod []int // minutes after midnight, ascending
	for h := range 24 {
		if spec.Hour&(1<<h) == 0 {
			continue
		}
		for m := range 60 {
			if spec.Minute&(1<<m) != 0 {
				tod = append(tod, h*60+m)
			}
		}
	}
	if len(tod) == 0 || bits.OnesCount64(spec.Second&^(1<<63)) != 1 {
		return 0, 0, false
	}
	within = time.Duration(1<<63 - 1)
	for i := 1; i < len(tod); i++ {
		within = min(within, time.Duration(tod[i]-tod[i-1])*time.Minute)
	}
	wrap = time.Duration(24*60-tod[len(tod)-1]+tod[0]) * time.Minute
	return within, wrap, true
}

// minCronGap returns the shortest time between two consecutive activations of
// spec (evaluated in UTC). Activations are the matching times of day on the
// matching days, so the gap is the shortest of: two times within a day, and
// the last time of a matching day to the first time of the next matching day.
func minCronGap(spec *cron.SpecSchedule) time.Duration {
	within, wrap, ok := cronDayGaps(spec)
	if !ok {
		return 0
	}
	if wrap >= within {
		return within // a day gap only adds whole days to wrap
	}
	return min(within, wrap+time.Duration(minCronDayGap(spec)-1)*24*time.Hour)
}

// minCronDayGap returns the fewest days between two consecutive matching
// days, using spec's own day rules: a copy firing at midnight of each
// matching day is stepped through the reference calendar.
func minCronDayGap(spec *cron.SpecSchedule) int {
	days := *spec
	days.Second, days.Minute, days.Hour = 1, 1, 1
	end := cronReference.AddDate(cronScanYears, 0, 0)
	gap := 0
	prev := days.Next(cronReference.Add(-time.Second))
	for !prev.IsZero() && prev.Before(end) {
		next := days.Next(prev)
		if next.IsZero() {
			break
		}
		d := int(next.Sub(prev) / (24 * time.Hour)) // UTC: days are 24 h
		if gap == 0 || d < gap {
			gap = d
		}
		if gap == 1 {
			break
		}
		prev = next
	}
	if gap == 0 { // fewer than two matching days in the scan; cannot happen for a schedule that fires
		gap = cronScanYears * 366
	}
	return gap
}
