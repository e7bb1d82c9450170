package secrets

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// LocalRefPrefix starts every reference Local issues:
// "secret://local/<tenantId>/<id>".
const LocalRefPrefix = "secret://local/"

// Local is the standalone stand-in for Secret Management: each value is
// encrypted with AES-256-GCM under the configured key (secrets.encryptionKey)
// and stored as a document {id, tenantId, ciphertext, keyId, createdAt} in a
// container partitioned by tenantId (store.LocalSecretsContainer).
//
// Every value gets a fresh random nonce, and the tenant and reference are the
// GCM additional data: a ciphertext copied into another tenant's partition or
// under another id fails to decrypt instead of leaking across tenants.
type Local struct {
	docs  *store.Repository[localDoc]
	aead  cipher.AEAD
	keyID string
	now   func() time.Time
}

var _ Store = (*Local)(nil)

// localDoc is the stored form of one secret. Ciphertext is base64 of
// nonce || AES-GCM sealed value. KeyID names the key (not the key itself) so a
// changed secrets.encryptionKey is reported as such rather than as tampering.
type localDoc struct {
	ID         string    `json:"id"`
	TenantID   string    `json:"tenantId"`
	Ciphertext string    `json:"ciphertext"`
	KeyID      string    `json:"keyId"`
	CreatedAt  time.Time `json:"createdAt"`
	UpdatedAt  time.Time `json:"updatedAt,omitzero"`
}

func (d localDoc) Key() (string, string) { return d.TenantID, d.ID }

// NewLocal stores secrets in c (the integration_local_secrets container),
// encrypted with key, which must be 32 bytes (config
// SecretsConfig.EncryptionKeyBytes).
func NewLocal(c store.Container, key []byte) (*Local, error) {
	if c == nil {
		return nil, errors.New("secrets: local store needs a container")
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("secrets: local store needs a 32-byte AES-256 key, got %d bytes", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	// A key id derived one-way from the key: it tells keys apart without
	// revealing anything usable about them.
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("castiel/integration-manager/local-secrets/key-id"))
	return &Local{
		docs:  store.NewRepository[localDoc](c),
		aead:  aead,
		keyID: hex.EncodeToString(mac.Sum(nil)[:4]),
		now:   time.Now,
	}, nil
}

// Put encrypts value and stores it under a new random reference.
func (l *Local) Put(ctx context.Context, tenantID string, value []byte) (string, error) {
	if err := checkPut(tenantID, value); err != nil {
		return "", err
	}
	id := "sec_" + strings.ToLower(rand.Text())
	ref := LocalRefPrefix + tenantID + "/" + id
	doc := localDoc{
		ID:         id,
		TenantID:   tenantID,
		Ciphertext: l.seal(tenantID, ref, value),
		KeyID:      l.keyID,
		CreatedAt:  l.now().UTC(),
	}
	if _, err := l.docs.Create(ctx, doc); err != nil {
		return "", storeErr("put", ref, err)
	}
	return ref, nil
}

// Get decrypts the value behind ref.
func (l *Local) Get(ctx context.Context, tenantID, ref string) ([]byte, error) {
	id, err := parseLocalRef(tenantID, ref)
	if err != nil {
		return nil, err
	}
	doc, _, err := l.docs.Get(ctx, tenantID, id)
	if err != nil {
		return nil, storeErr("get", ref, err)
	}
	if doc.TenantID != tenantID || doc.ID != id {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, ref)
	}
	return l.open(tenantID, ref, doc)
}

// Replace encrypts value under a fresh nonce (and the current key) in place
// of the value behind ref.
func (l *Local) Replace(ctx context.Context, tenantID, ref string, value []byte) error {
	if err := checkPut(tenantID, value); err != nil {
		return err
	}
	id, err := parseLocalRef(tenantID, ref)
	if err != nil {
		return err
	}
	_, _, err = l.docs.Update(ctx, tenantID, id, func(doc *localDoc) error {
		if doc.TenantID != tenantID || doc.ID != id {
			return fmt.Errorf("%w: %s", ErrNotFound, ref)
		}
		doc.Ciphertext = l.seal(tenantID, ref, value)
		doc.KeyID = l.keyID
		doc.UpdatedAt = l.now().UTC()
		return nil
	})
	if err != nil {
		return storeErr("replace", ref, err)
	}
	return nil
}

// Delete removes the value behind ref.
func (l *Local) Delete(ctx context.Context, tenantID, ref string) error {
	id, err := parseLocalRef(tenantID, ref)
	if err != nil {
		return err
	}
	if err := l.docs.Delete(ctx, tenantID, id, ""); err != nil {
		return storeErr("delete", ref, err)
	}
	return nil
}

// additionalData binds a ciphertext to its tenant and reference.
func additionalData(tenantID, ref string) []byte {
	return []byte("castiel-local-secret\x00" + tenantID + "\x00" + ref)
}

func (l *Local) seal(tenantID, ref string, value []byte) string {
	nonce := make([]byte, l.aead.NonceSize(), l.aead.NonceSize()+len(value)+l.aead.Overhead())
	// crypto/rand.Read never fails (it panics on an unusable system source).
	_, _ = rand.Read(nonce)
	sealed := l.aead.Seal(nonce, nonce, value, additionalData(tenantID, ref))
	return base64.StdEncoding.EncodeToString(sealed)
}

func (l *Local) open(tenantID, ref string, doc localDoc) ([]byte, error) {
	sealed, err := base64.StdEncoding.DecodeString(doc.Ciphertext)
	if err != nil || len(sealed) < l.aead.NonceSize()+l.aead.Overhead() {
		return nil, fmt.Errorf("%w: %s: ciphertext is malformed", ErrUndecryptable, ref)
	}
	n := l.aead.NonceSize()
	value, err := l.aead.Open(nil, sealed[:n], sealed[n:], additionalData(tenantID, ref))
	switch {
	case err == nil:
		return value, nil
	case doc.KeyID != l.keyID:
		return nil, fmt.Errorf("%w: %s was encrypted with key %s but this process holds key %s (was secrets.encryptionKey changed?)",
			ErrUndecryptable, ref, doc.KeyID, l.keyID)
	default:
		return nil, fmt.Errorf("%w: %s: authentication failed (tampered or moved ciphertext)", ErrUndecryptable, ref)
	}
}

// parseLocalRef returns the document id of ref if ref is a Local reference
// of tenantID. Any other reference, including another tenant's, is simply
// not found: callers learn nothing about other tenants.
func parseLocalRef(tenantID, ref string) (string, error) {
	if err := checkTenant(tenantID); err != nil {
		return "", err
	}
	rest, ok := strings.CutPrefix(ref, LocalRefPrefix)
	if ok {
		refTenant, id, ok := strings.Cut(rest, "/")
		if ok && refTenant == tenantID && domain.IsValidID(id) {
			return id, nil
		}
	}
	// The ref is not quoted back: a caller that mixed up its arguments may
	// have passed a secret in its place.
	return "", fmt.Errorf("%w: not a local secret reference of tenant %s", ErrNotFound, tenantID)
}

// storeErr maps a store error to this package's sentinels, keeping the
// store's error in the chain.
func storeErr(op, ref string, err error) error {
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrUndecryptable):
		return err
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("%w: %s", ErrNotFound, ref)
	case store.IsTransient(err), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("secrets: %s %s: %w: %w", op, ref, ErrUnavailable, err)
	default:
		return fmt.Errorf("secrets: %s %s: %w", op, ref, err)
	}
}
