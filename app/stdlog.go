package app

import (
	"log"
	"strings"

	"github.com/rs/zerolog"
)

// newStdLogger routes net/http's own error log (TLS handshakes, panics) into zerolog.
func newStdLogger(logger zerolog.Logger) *log.Logger {
	return log.New(stdWriter{logger}, "", 0)
}

type stdWriter struct{ logger zerolog.Logger }

func (w stdWriter) Write(p []byte) (int, error) {
	w.logger.Warn().Str("component", "http").Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}
