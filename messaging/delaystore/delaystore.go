// Package delaystore keeps the in-process transport's delayed messages in a
// store.Container (messaging.ScheduleStore), so that the standalone process loses no
// pending webhook retry when it restarts: the embedded store is a durable file.
//
// Documents are partitioned by role. The container allows no cross-partition query,
// so each role also has a marker document in the partition "~roles" (a name no role
// can have), written once per role and Store, from which Pending learns the roles.
package delaystore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/store"
)

// The container the lead declares in store.Containers.
const (
	ContainerName = store.ScheduledContainer
	PartitionKey  = "role"
)

// rolesPartition holds one marker per role that ever had a delayed message. '~' is
// not allowed in role names, so no role's messages can land there.
const rolesPartition = "~roles"

// Document kinds.
const (
	kindMessage = "message"
	kindRole    = "role"
)

// Spec is the container's spec: partitioned by role, no expiry (a pending retry must
// not vanish), no cross-partition queries.
func Spec() store.ContainerSpec {
	return store.ContainerSpec{Name: ContainerName, PartitionKey: PartitionKey}
}

// Store is a messaging.ScheduleStore on a container with Spec's layout.
type Store struct {
	c store.Container

	mu    sync.Mutex
	roles map[string]bool // roles whose marker this Store has written or read
}

var _ messaging.ScheduleStore = (*Store)(nil)

// New returns a Store on c.
func New(c store.Container) *Store {
	return &Store{c: c, roles: map[string]bool{}}
}

type document struct {
	ID       string            `json:"id"`
	Role     string            `json:"role"`
	Kind     string            `json:"kind"`
	Topic    string            `json:"topic,omitempty"`
	Due      time.Time         `json:"due,omitzero"`
	UUID     string            `json:"uuid,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	Payload  []byte            `json:"payload,omitempty"`
}

// Save stores m (idempotently: saving it again overwrites it).
func (s *Store) Save(ctx context.Context, m messaging.ScheduledMessage) error {
	if m.Role == "" || m.Role == rolesPartition || m.ID == "" {
		return fmt.Errorf("delaystore: save: message needs a role and an id, got role %q id %q", m.Role, m.ID)
	}
	if err := s.ensureRole(ctx, m.Role); err != nil {
		return err
	}
	body, err := json.Marshal(document{
		ID: m.ID, Role: m.Role, Kind: kindMessage, Topic: m.Topic, Due: m.Due.UTC(),
		UUID: m.UUID, Metadata: m.Metadata, Payload: m.Payload,
	})
	if err != nil {
		return fmt.Errorf("delaystore: encode message %s: %w", m.UUID, err)
	}
	if _, err := s.c.Upsert(ctx, m.Role, m.ID, body); err != nil {
		return fmt.Errorf("delaystore: save message %s for %s: %w", m.UUID, m.Role, err)
	}
	return nil
}

// ensureRole writes role's marker unless this Store knows it is there.
func (s *Store) ensureRole(ctx context.Context, role string) error {
	s.mu.Lock()
	known := s.roles[role]
	s.mu.Unlock()
	if known {
		return nil
	}
	body, err := json.Marshal(document{ID: role, Role: rolesPartition, Kind: kindRole})
	if err != nil {
		return err
	}
	if _, err := s.c.Upsert(ctx, rolesPartition, role, body); err != nil {
		return fmt.Errorf("delaystore: record role %s: %w", role, err)
	}
	s.mu.Lock()
	s.roles[role] = true
	s.mu.Unlock()
	return nil
}

// Delete removes a handled message; one already gone is not an error.
func (s *Store) Delete(ctx context.Context, role, id string) error {
	err := s.c.Delete(ctx, role, id, "")
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("delaystore: delete %s/%s: %w", role, id, err)
	}
	return nil
}

// Pending returns every saved message of every role.
func (s *Store) Pending(ctx context.Context) ([]messaging.ScheduledMessage, error) {
	var roles []string
	err := s.scan(ctx, rolesPartition, func(d document) {
		if d.Kind == kindRole {
			roles = append(roles, d.ID)
		}
	})
	if err != nil {
		return nil, err
	}
	var pending []messaging.ScheduledMessage
	for _, role := range roles {
		err := s.scan(ctx, role, func(d document) {
			if d.Kind != kindMessage {
				return
			}
			pending = append(pending, messaging.ScheduledMessage{
				ID: d.ID, Role: d.Role, Topic: d.Topic, Due: d.Due,
				UUID: d.UUID, Metadata: d.Metadata, Payload: d.Payload,
			})
		})
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.roles[role] = true
		s.mu.Unlock()
	}
	return pending, nil
}

// scan calls fn for every document of a partition, page by page.
func (s *Store) scan(ctx context.Context, partition string, fn func(document)) error {
	q := store.Query{PartitionKey: partition, Limit: store.MaxPageSize}
	for {
		page, err := s.c.Query(ctx, q)
		if err != nil {
			return fmt.Errorf("delaystore: list %s: %w", partition, err)
		}
		for _, it := range page.Items {
			var d document
			if err := json.Unmarshal(it.Body, &d); err != nil {
				return fmt.Errorf("delaystore: %s/%s is not a scheduled message: %w", partition, it.ID, err)
			}
			fn(d)
		}
		if page.Continuation == "" {
			return nil
		}
		q.Continuation = page.Continuation
	}
}
