package messaging

import (
	"github.com/ThreeDotsLabs/watermill"
	"github.com/rs/zerolog"
)

// watermillLogger lets Watermill's router and GoChannel log through zerolog. Watermill's
// Info messages (handler started, no subscriber for a topic, ...) are library chatter
// and go to Debug; our own code logs what an operator needs at Info and above.
type watermillLogger struct {
	log zerolog.Logger
}

// NewWatermillLogger adapts a zerolog.Logger to watermill.LoggerAdapter.
func NewWatermillLogger(log zerolog.Logger) watermill.LoggerAdapter {
	return watermillLogger{log: log.With().Str("component", "watermill").Logger()}
}

func (l watermillLogger) Error(msg string, err error, fields watermill.LogFields) {
	l.log.Error().Err(err).Fields(map[string]any(fields)).Msg(msg)
}

func (l watermillLogger) Info(msg string, fields watermill.LogFields) {
	l.log.Debug().Fields(map[string]any(fields)).Msg(msg)
}

func (l watermillLogger) Debug(msg string, fields watermill.LogFields) {
	l.log.Debug().Fields(map[string]any(fields)).Msg(msg)
}

func (l watermillLogger) Trace(msg string, fields watermill.LogFields) {
	l.log.Trace().Fields(map[string]any(fields)).Msg(msg)
}

func (l watermillLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return watermillLogger{log: l.log.With().Fields(map[string]any(fields)).Logger()}
}
