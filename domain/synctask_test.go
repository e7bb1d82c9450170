package domain

import (
	"testing"
	"time"
)

func TestSyncTask_Validate_Schedule(t *testing.T) {
	runFieldCases(t, validSyncTask, SyncTask.Validate, []fieldCase[SyncTask]{
		{"interval", func(s *SyncTask) { s.Schedule = "15m" }, ""},
		{"cron", func(s *SyncTask) { s.Schedule = "*/5 * * * *" }, ""},
		{"cron descriptor", func(s *SyncTask) { s.Schedule = "@hourly" }, ""},
		{"interval too short", func(s *SyncTask) { s.Schedule = "30s" }, "schedule"},
		{"bad cron", func(s *SyncTask) { s.Schedule = "*/5 * * *" }, "schedule"},
		{"cron with a time zone", func(s *SyncTask) { s.Schedule = "TZ=UTC 0 3 * * *" }, "schedule"},
		{"neither", func(s *SyncTask) { s.Schedule = "hourly" }, "schedule"},
	})
}

func TestSyncTask_ParsedSchedule(t *testing.T) {
	task := validSyncTask()
	task.Schedule = "0 */6 * * *"
	if s := task.ParsedSchedule(); s.Kind() != ScheduleCron || task.Interval() != 0 {
		t.Errorf("cron task: kind %d, Interval %s; want cron and no interval", s.Kind(), task.Interval())
	}
	task.Schedule = "15m"
	if s := task.ParsedSchedule(); s.Kind() != ScheduleInterval || task.Interval() != 15*time.Minute {
		t.Errorf("interval task: kind %d, Interval %s; want a 15m interval", s.Kind(), task.Interval())
	}
}
