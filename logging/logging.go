// Package logging builds the zerolog loggers every binary uses, so all of them write
// the same fields under the same names. It never touches zerolog's globals.
package logging

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// Field names for structured context. Handlers log these, never ad-hoc spellings, so
// one query finds every line about a tenant, a message or a request chain.
const (
	FieldService       = "service"
	FieldTenantID      = "tenantId"
	FieldMessageID     = "messageId"
	FieldCorrelationID = "correlationId"
	FieldIntegrationID = "integrationId"
	FieldExecutionID   = "executionId"
	FieldTime          = "time"
)

// Formats accepted by New (config resolves "auto" before calling it).
const (
	FormatJSON    = "json"
	FormatConsole = "console"
)

// New returns a logger writing to w at level (debug, info, warn, error) in format
// (json or console). Every line carries a UTC timestamp with sub-second precision
// and the service name.
func New(w io.Writer, level, format, service string) (zerolog.Logger, error) {
	lvl, err := parseLevel(level)
	if err != nil {
		return zerolog.Nop(), err
	}
	var out io.Writer
	switch format {
	case FormatJSON:
		out = w
	case FormatConsole:
		out = consoleWriter(w)
	default:
		return zerolog.Nop(), fmt.Errorf("logging: unknown format %q (want json or console)", format)
	}
	return zerolog.New(out).
		Level(lvl).
		Hook(timestamp{}).
		With().Str(FieldService, service).Logger(), nil
}

func parseLevel(level string) (zerolog.Level, error) {
	switch level {
	case "debug":
		return zerolog.DebugLevel, nil
	case "info":
		return zerolog.InfoLevel, nil
	case "warn":
		return zerolog.WarnLevel, nil
	case "error":
		return zerolog.ErrorLevel, nil
	}
	return zerolog.NoLevel, fmt.Errorf("logging: unknown level %q (want debug, info, warn or error)", level)
}

// timestamp stamps each event with RFC 3339 nanosecond time in UTC. zerolog's own
// Timestamp() formats with the global TimeFieldFormat (whole seconds by default), and
// changing that global would change it for every logger in the process.
type timestamp struct{}

func (timestamp) Run(e *zerolog.Event, _ zerolog.Level, _ string) {
	e.Str(FieldTime, time.Now().UTC().Format(time.RFC3339Nano))
}

// consoleWriter renders lines for people: local time, level, message, then fields.
// Colour only when w is a terminal, so files and test buffers get plain text.
func consoleWriter(w io.Writer) zerolog.ConsoleWriter {
	return zerolog.ConsoleWriter{
		Out:           w,
		NoColor:       !isTerminal(w),
		TimeFormat:    "15:04:05.000",
		PartsOrder:    []string{FieldTime, zerolog.LevelFieldName, FieldService, zerolog.MessageFieldName},
		FieldsExclude: []string{FieldService}, // already shown as a part
		FormatTimestamp: func(i any) string {
			s, _ := i.(string)
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return s
			}
			return t.Local().Format("15:04:05.000")
		},
		FormatPartValueByName: func(i any, name string) string {
			if name == FieldService {
				return fmt.Sprintf("[%v]", i)
			}
			return fmt.Sprint(i)
		},
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

// WithTenant returns l with the tenant on every line.
func WithTenant(l zerolog.Logger, tenantID string) zerolog.Logger {
	if tenantID == "" {
		return l
	}
	return l.With().Str(FieldTenantID, tenantID).Logger()
}

// WithMessage returns l with the tenant, message and correlation ids of the message
// being handled on every line; empty ids are left out.
func WithMessage(l zerolog.Logger, tenantID, messageID, correlationID string) zerolog.Logger {
	c := l.With()
	if tenantID != "" {
		c = c.Str(FieldTenantID, tenantID)
	}
	if messageID != "" {
		c = c.Str(FieldMessageID, messageID)
	}
	if correlationID != "" {
		c = c.Str(FieldCorrelationID, correlationID)
	}
	return c.Logger()
}
