package config

import (
	"fmt"
	"io"
	"log/slog"
)

const redacted = "[redacted]"

// Secret holds a credential. Every way of printing or serialising it (fmt verbs,
// String, JSON, text, YAML, slog) yields "[redacted]", so a Secret that reaches a log
// line or a response leaks nothing. Reveal is the one deliberate way to read it.
type Secret string

// Reveal returns the secret value. Call it only where the value is handed to the
// library that needs it.
func (s Secret) Reveal() string { return string(s) }

// IsSet reports whether a value is present.
func (s Secret) IsSet() bool { return s != "" }

func (Secret) String() string               { return redacted }
func (Secret) GoString() string             { return redacted }
func (Secret) Format(f fmt.State, _ rune)   { _, _ = io.WriteString(f, redacted) }
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
func (Secret) MarshalYAML() (any, error)    { return redacted, nil }
func (Secret) LogValue() slog.Value         { return slog.StringValue(redacted) }
