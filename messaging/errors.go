package messaging

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/ThreeDotsLabs/watermill/message"
)

// PermanentError marks a failure that no retry can fix: undecodable JSON, an unknown
// message type, failed validation, an unknown tenant. The router sends such a message
// to the poison topic instead of retrying it. Every other error is transient.
type PermanentError struct {
	Err error
}

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as permanent; it returns nil for nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err, or any error it wraps, was marked Permanent.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

// PanicError is what a handler panic becomes: a permanent error, because a message
// that made a handler panic once will make it panic again.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("handler panicked: %v", e.Value) }

// ErrUnexpectedType is wrapped (permanently) by Decode for a ce-type the handler does not accept.
var ErrUnexpectedType = errors.New("unexpected message type")

// ErrUndecodable is wrapped (permanently) by Decode for a payload that is not the expected JSON.
var ErrUndecodable = errors.New("undecodable payload")

// Decode checks the message's ce-type against accept (any type when accept is empty)
// and unmarshals its JSON payload into a T. Both failures are permanent: redelivering
// the same bytes cannot help.
func Decode[T any](msg *message.Message, accept ...string) (T, error) {
	var v T
	if ceType := msg.Metadata.Get(MetaType); len(accept) > 0 && !slices.Contains(accept, ceType) {
		return v, Permanent(fmt.Errorf("%w %q (accepted: %v)", ErrUnexpectedType, ceType, accept))
	}
	if err := json.Unmarshal(msg.Payload, &v); err != nil {
		return v, Permanent(fmt.Errorf("%w: %T from %d bytes: %v", ErrUndecodable, v, len(msg.Payload), err))
	}
	return v, nil
}
