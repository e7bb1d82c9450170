// Package secrets keeps secret values (webhook signing secrets, connection
// credentials, ingress secrets) out of the store and the API: callers hand a
// value to a Store and keep only the opaque reference it returns.
//
// Two implementations: Local (standalone: AES-256-GCM encrypted documents in
// the document store) and HTTP (the fleet's Secret Management service).
package secrets

import (
	"context"
	"errors"
	"fmt"

	"github.com/castiel/integration-manager/domain"
)

// Store holds secret values per tenant behind opaque references.
//
// A reference is only valid together with the tenant it was created for: any
// operation with another tenant's reference fails with ErrNotFound, exactly
// as for a reference that never existed.
type Store interface {
	// Put stores value for tenantID and returns its reference.
	Put(ctx context.Context, tenantID string, value []byte) (ref string, err error)
	// Get returns the value behind ref; ErrNotFound if absent.
	Get(ctx context.Context, tenantID, ref string) ([]byte, error)
	// Replace overwrites the value behind ref, keeping the reference
	// (rotation); ErrNotFound if absent.
	Replace(ctx context.Context, tenantID, ref string, value []byte) error
	// Delete removes the value; ErrNotFound if absent (callers that want an
	// idempotent delete ignore it).
	Delete(ctx context.Context, tenantID, ref string) error
}

// Errors callers branch on with errors.Is. No error of this package ever
// carries a secret value.
var (
	// ErrNotFound: no secret behind that reference for that tenant.
	ErrNotFound = errors.New("secrets: secret not found")
	// ErrUnavailable: the secret store could not be reached or failed
	// transiently (5xx, timeout, connection error, store unavailable). It is
	// never the fault of the message or request being handled: retry later.
	ErrUnavailable = errors.New("secrets: secret store unavailable")
	// ErrInvalid: the request itself is unacceptable (malformed tenant id,
	// value too large).
	ErrInvalid = errors.New("secrets: invalid request")
	// ErrUndecryptable: a stored value cannot be decrypted: it was encrypted
	// with another key (secrets.encryptionKey changed) or has been tampered
	// with. Retrying does not help.
	ErrUndecryptable = errors.New("secrets: stored value cannot be decrypted")
)

// IsTransient reports whether err is worth retrying later.
func IsTransient(err error) bool { return errors.Is(err, ErrUnavailable) }

// MaxValueBytes bounds one secret value: credentials and signing secrets are
// small, and the bound keeps a document well under store item limits.
const MaxValueBytes = 64 << 10

// checkPut validates what every implementation refuses alike.
func checkPut(tenantID string, value []byte) error {
	if err := checkTenant(tenantID); err != nil {
		return err
	}
	if len(value) > MaxValueBytes {
		return fmt.Errorf("%w: value of %d bytes exceeds %d", ErrInvalid, len(value), MaxValueBytes)
	}
	return nil
}

func checkTenant(tenantID string) error {
	if !domain.IsValidID(tenantID) {
		return fmt.Errorf("%w: %q is not a valid tenant id", ErrInvalid, tenantID)
	}
	return nil
}
