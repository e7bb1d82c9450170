package logging

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestNew_JSONLinesCarryServiceTimeAndMessageFields(t *testing.T) {
	var buf bytes.Buffer
	l, err := New(&buf, "info", FormatJSON, "webhook-dispatcher")
	if err != nil {
		t.Fatal(err)
	}

	ml := WithMessage(l, "tenant-1", "msg-1", "corr-1")
	ml.Info().Str("topic", "webhooks").Msg("delivered")
	l.Info().Msg("plain")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(lines), buf.String())
	}
	var first, second map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatalf("line is not JSON: %v\n%s", err, lines[0])
	}
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatalf("line is not JSON: %v\n%s", err, lines[1])
	}
	want := map[string]any{
		FieldService: "webhook-dispatcher", FieldTenantID: "tenant-1", FieldMessageID: "msg-1",
		FieldCorrelationID: "corr-1", "level": "info", "message": "delivered", "topic": "webhooks",
	}
	for k, v := range want {
		if first[k] != v {
			t.Errorf("field %s = %v, want %v in %s", k, first[k], v, lines[0])
		}
	}
	ts, _ := first[FieldTime].(string)
	if when, err := time.Parse(time.RFC3339Nano, ts); err != nil || time.Since(when) > time.Minute {
		t.Errorf("time = %q, want a current RFC 3339 timestamp", ts)
	}
	if second[FieldService] != "webhook-dispatcher" {
		t.Errorf("a line without context lost the service: %s", lines[1])
	}
	if _, ok := second[FieldTenantID]; ok {
		t.Errorf("WithMessage changed the parent logger: %s", lines[1])
	}
}

func TestWithMessage_LeavesOutEmptyIDs(t *testing.T) {
	var buf bytes.Buffer
	l, _ := New(&buf, "info", FormatJSON, "api")

	ml := WithMessage(l, "tenant-1", "", "")
	ml.Info().Msg("m")

	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if _, ok := got[FieldMessageID]; ok {
		t.Errorf("empty messageId was logged: %s", buf.String())
	}
	if _, ok := got[FieldCorrelationID]; ok {
		t.Errorf("empty correlationId was logged: %s", buf.String())
	}
	if got[FieldTenantID] != "tenant-1" {
		t.Errorf("tenantId missing: %s", buf.String())
	}
}

func TestWithTenant_AddsTenant(t *testing.T) {
	var buf bytes.Buffer
	l, _ := New(&buf, "info", FormatJSON, "api")

	tl := WithTenant(l, "tenant-9")
	tl.Info().Msg("m")

	if !strings.Contains(buf.String(), `"tenantId":"tenant-9"`) {
		t.Errorf("line lacks the tenant: %s", buf.String())
	}
}

func TestNew_ConsoleIsHumanReadable(t *testing.T) {
	var buf bytes.Buffer
	l, err := New(&buf, "debug", FormatConsole, "standalone")
	if err != nil {
		t.Fatal(err)
	}

	ml := WithMessage(l, "tenant-1", "msg-1", "")
	ml.Warn().Msg("endpoint slow")

	line := strings.TrimSpace(buf.String())
	// e.g. 14:03:07.123 WRN [standalone] endpoint slow messageId=msg-1 tenantId=tenant-1
	pattern := regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3} WRN \[standalone\] endpoint slow .*tenantId=tenant-1`)
	if !pattern.MatchString(line) {
		t.Errorf("console line = %q, want time, level, [service], message, then key=value fields", line)
	}
	if strings.Contains(line, "{") || strings.Contains(line, "\x1b[") {
		t.Errorf("console line to a buffer has JSON or colour codes: %q", line)
	}
	if strings.Count(line, "standalone") != 1 {
		t.Errorf("service printed more than once: %q", line)
	}
}

func TestNew_LevelFiltersLines(t *testing.T) {
	tests := []struct {
		level string
		lines int // of debug, info, warn, error
	}{
		{"debug", 4}, {"info", 3}, {"warn", 2}, {"error", 1},
	}
	for _, tt := range tests {
		t.Run(tt.level, func(t *testing.T) {
			var buf bytes.Buffer
			l, err := New(&buf, tt.level, FormatJSON, "api")
			if err != nil {
				t.Fatal(err)
			}

			l.Debug().Msg("d")
			l.Info().Msg("i")
			l.Warn().Msg("w")
			l.Error().Msg("e")

			if got := strings.Count(buf.String(), "\n"); got != tt.lines {
				t.Errorf("level %s wrote %d lines, want %d:\n%s", tt.level, got, tt.lines, buf.String())
			}
		})
	}
}

func TestNew_RejectsUnknownLevelAndFormat(t *testing.T) {
	tests := []struct{ level, format, want string }{
		{"loud", FormatJSON, `logging: unknown level "loud"`},
		{"info", "xml", `logging: unknown format "xml"`},
		{"info", "auto", `logging: unknown format "auto"`},
	}
	for _, tt := range tests {
		_, err := New(&bytes.Buffer{}, tt.level, tt.format, "api")
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("New(%q, %q) error = %v, want %s...", tt.level, tt.format, err, tt.want)
		}
	}
}
