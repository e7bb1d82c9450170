package integrations_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/castiel/integration-manager/connector"
	"github.com/castiel/integration-manager/connector/fakeapi"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/handlers/conflicts"
	"github.com/castiel/integration-manager/integrations"
	"github.com/castiel/integration-manager/messaging"
)

// contactsTask syncs the fake's contacts, renaming two fields.
func contactsTask() domain.SyncTask {
	return domain.SyncTask{
		ID: "task-1", TenantID: tenant, IntegrationID: intID, Entity: "contacts", Direction: domain.DirectionBidirectional,
		Mapping: []domain.FieldMapping{{Source: "name", Target: "fullName"}, {Source: "email", Target: "contact.email"}},
	}
}

func TestExternal_ReadReturnsTheRecordInCastielsShapeHashedAsTheSyncRunDoes(t *testing.T) {
	fx := newFixture(t, fakeapi.AuthOAuth2RefreshToken)
	want := fx.srv.SeedN("contacts", 3)[1]
	task := contactsTask()

	got, err := integrations.NewExternal(fx.f).Read(context.Background(), tenant, task, want.ID)

	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if !got.Present() || got.Data["fullName"] != want.Name || got.Data["contact"].(map[string]any)["email"] != want.Email {
		t.Fatalf("Read = %+v; want %+v mapped to Castiel's shape", got, want)
	}
	if _, ok := got.Data["name"]; ok {
		t.Errorf("Read kept the external field name: %v", got.Data)
	}
	if !got.ModifiedAt.Equal(want.UpdatedAt) {
		t.Errorf("ModifiedAt = %v, want the record's updated_at %v", got.ModifiedAt, want.UpdatedAt)
	}
	// The sync run builds the external side from the listed record: the
	// resolver's read must hash the same version the same way.
	page, err := fx.client(t).ListPage(context.Background(), "contacts", connector.PageRequest{})
	if err != nil {
		t.Fatal(err)
	}
	entity, _ := fx.srv.Provider().Entity("contacts")
	for _, raw := range page.Records {
		if raw["id"] == want.ID {
			run, err := domain.ExternalSideRecord(entity, task.Mapping, raw, false)
			if err != nil {
				t.Fatal(err)
			}
			if run.ContentHash() != got.ContentHash() {
				t.Errorf("the resolver's hash %s differs from the sync run's %s for the same version", got.ContentHash(), run.ContentHash())
			}
		}
	}
}

func TestExternal_ReadOfARecordTheAPINoLongerHasIsADeletion(t *testing.T) {
	fx := newFixture(t, fakeapi.AuthNone)
	gone := fx.srv.SeedN("contacts", 1)[0]
	fx.srv.Remove("contacts", gone.ID)
	x := integrations.NewExternal(fx.f)

	for name, key := range map[string]string{"deleted at the API": gone.ID, "never existed": "c-404"} {
		got, err := x.Read(context.Background(), tenant, contactsTask(), key)
		if err != nil || got == nil || !got.Deleted || got.Present() {
			t.Errorf("%s: Read = %+v, %v; want a deletion and no error", name, got, err)
		}
	}
}

func TestExternal_WriteCreatesUpdatesAndDeletes(t *testing.T) {
	fx := newFixture(t, fakeapi.AuthOAuth2RefreshToken)
	x := integrations.NewExternal(fx.f)
	task := contactsTask()
	ctx := context.Background()

	data := map[string]any{"name": "Ada", "email": "ada@example.com"}
	if err := x.Write(ctx, tenant, task, conflicts.ExternalWrite{Key: "c-ada", Data: data, Create: true}); err != nil {
		t.Fatalf("create: %v", err)
	}
	if r, ok := fx.srv.Get("contacts", "c-ada"); !ok || r.Name != "Ada" || r.Email != "ada@example.com" {
		t.Fatalf("after create the API holds %+v (found %v); want Ada under the record's key c-ada", r, ok)
	}
	if _, ok := data["id"]; ok {
		t.Error("create set the primary key on the caller's record; it must write a copy")
	}

	err := x.Write(ctx, tenant, task, conflicts.ExternalWrite{Key: "c-ada", Data: map[string]any{"name": "Ada Lovelace", "email": "ada@example.com"}})
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	got, err := x.Read(ctx, tenant, task, "c-ada")
	if err != nil || got.Data["fullName"] != "Ada Lovelace" {
		t.Fatalf("read after update = %+v, %v; want fullName Ada Lovelace", got, err)
	}

	if err := x.Write(ctx, tenant, task, conflicts.ExternalWrite{Key: "c-ada", Delete: true}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if r, _ := fx.srv.Get("contacts", "c-ada"); !r.Deleted {
		t.Fatal("the record is not deleted at the API")
	}
	if err := x.Write(ctx, tenant, task, conflicts.ExternalWrite{Key: "c-ada", Delete: true}); err != nil {
		t.Errorf("deleting a record already gone (a retried resolution) failed: %v", err)
	}

	log := fx.srv.WriteLog()
	if len(log) != 3 || log[0].Method != http.MethodPost || log[1].Method != http.MethodPatch || log[2].Method != http.MethodDelete {
		t.Errorf("write log %+v; want one create, one update, one delete", log)
	}
}

// Whatever no retry can fix is messaging.Permanent, so the resolver fails
// the resolution at once with the reason instead of retrying it.
func TestExternal_RefusalsArePermanent(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		do   func(t *testing.T, fx *fixture, x *integrations.External) error
	}{
		{"update of a record the API does not have (404)", func(t *testing.T, fx *fixture, x *integrations.External) error {
			return x.Write(ctx, tenant, contactsTask(), conflicts.ExternalWrite{Key: "c-404", Data: map[string]any{"name": "x"}})
		}},
		{"create the API rejects (422)", func(t *testing.T, fx *fixture, x *integrations.External) error {
			return x.Write(ctx, tenant, contactsTask(), conflicts.ExternalWrite{Key: "c-new", Data: map[string]any{"email": "not-an-address"}, Create: true})
		}},
		{"read the API forbids (403)", func(t *testing.T, fx *fixture, x *integrations.External) error {
			fx.srv.AddFault(fakeapi.Fault{Count: 10, Status: http.StatusForbidden})
			_, err := x.Read(ctx, tenant, contactsTask(), "c-1")
			return err
		}},
		{"a record the task's mapping cannot convert", func(t *testing.T, fx *fixture, x *integrations.External) error {
			rec := fx.srv.SeedN("contacts", 1)[0]
			task := contactsTask()
			task.Mapping = []domain.FieldMapping{{Source: "name", Target: "n", Convert: domain.ConvertNumber}}
			_, err := x.Read(ctx, tenant, task, rec.ID)
			return err
		}},
		{"an entity the provider does not define", func(t *testing.T, fx *fixture, x *integrations.External) error {
			task := contactsTask()
			task.Entity = "tickets"
			_, err := x.Read(ctx, tenant, task, "t-1")
			return err
		}},
		{"an entity without a get request", func(t *testing.T, fx *fixture, x *integrations.External) error {
			p := fx.srv.Provider()
			p.Entities[0].Get = nil
			if _, err := fx.provs.Upsert(ctx, p); err != nil {
				t.Fatal(err)
			}
			_, err := x.Read(ctx, tenant, contactsTask(), "c-1")
			return err
		}},
		{"a paused integration", func(t *testing.T, fx *fixture, x *integrations.External) error {
			if _, _, err := fx.ints.Update(ctx, tenant, intID, func(i *domain.Integration) error {
				i.Status = domain.IntegrationPaused
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			_, err := x.Read(ctx, tenant, contactsTask(), "c-1")
			return err
		}},
		{"a connection without credentials", func(t *testing.T, fx *fixture, x *integrations.External) error {
			if _, _, err := fx.conns.Update(ctx, intID, intID, func(c *domain.Connection) error {
				c.CredentialRef, c.Status = "", domain.ConnectionPending
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			return x.Write(ctx, tenant, contactsTask(), conflicts.ExternalWrite{Key: "c-1", Delete: true})
		}},
		{"an integration that does not exist", func(t *testing.T, fx *fixture, x *integrations.External) error {
			task := contactsTask()
			task.IntegrationID = "int-missing"
			_, err := x.Read(ctx, tenant, task, "c-1")
			return err
		}},
		{"a task of another tenant", func(t *testing.T, fx *fixture, x *integrations.External) error {
			_, err := x.Read(ctx, "tenant-other", contactsTask(), "c-1")
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t, fakeapi.AuthOAuth2RefreshToken)
			err := tc.do(t, fx, integrations.NewExternal(fx.f))
			t.Logf("error: %v", err)
			if err == nil || !messaging.IsPermanent(err) || errors.Is(err, conflicts.ErrUnavailable) {
				t.Fatalf("got %v; want a permanent error (not an outage of ours)", err)
			}
		})
	}
}

// An outage of our own store or of Secret Management must not fail the
// resolution: the error wraps conflicts.ErrUnavailable and the message is
// retried later.
func TestExternal_OurOutagesWrapErrUnavailable(t *testing.T) {
	ctx := context.Background()
	t.Run("secret management down", func(t *testing.T) {
		fx := newFixture(t, fakeapi.AuthOAuth2RefreshToken)
		fx.srv.SeedN("contacts", 1)
		_ = fx.secretsDB.Close() // before the connection's credentials are first read

		_, err := integrations.NewExternal(fx.f).Read(ctx, tenant, contactsTask(), "c-1")

		if !errors.Is(err, conflicts.ErrUnavailable) || messaging.IsPermanent(err) {
			t.Fatalf("got %v; want an error wrapping conflicts.ErrUnavailable, not permanent", err)
		}
		if st := fx.srv.Stats(); st.Requests != 0 {
			t.Errorf("the API saw %d requests without credentials", st.Requests)
		}
	})
	t.Run("integrations store down", func(t *testing.T) {
		fx := newFixture(t, fakeapi.AuthNone)
		_ = fx.db.Close()

		err := integrations.NewExternal(fx.f).Write(ctx, tenant, contactsTask(), conflicts.ExternalWrite{Key: "c-1", Delete: true})

		if !errors.Is(err, conflicts.ErrUnavailable) || messaging.IsPermanent(err) {
			t.Fatalf("got %v; want an error wrapping conflicts.ErrUnavailable, not permanent", err)
		}
	})
}

// The external API still failing after the client's retries is neither
// permanent nor our outage: the resolver retries it, then fails the
// resolution with the reason.
func TestExternal_APIFailingAfterRetriesIsAPlainError(t *testing.T) {
	fx := newFixture(t, fakeapi.AuthNone)
	fx.srv.AddFault(fakeapi.Fault{Count: 100, Status: http.StatusBadGateway})

	_, err := integrations.NewExternal(fx.f).Read(context.Background(), tenant, contactsTask(), "c-1")

	var ce *connector.Error
	if err == nil || messaging.IsPermanent(err) || errors.Is(err, conflicts.ErrUnavailable) || !errors.As(err, &ce) || ce.Status != http.StatusBadGateway {
		t.Fatalf("got %v; want the API's 502, neither permanent nor ErrUnavailable", err)
	}
}
