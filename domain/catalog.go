package domain

import "time"

type CatalogStatus string

const (
	CatalogPublished  CatalogStatus = "published"
	CatalogDeprecated CatalogStatus = "deprecated" // still visible to tenants who installed it
)

// CatalogEntry is what tenants browse (container integration_catalog,
// partition "category"); it points at the provider that implements it.
type CatalogEntry struct {
	ID               string        `json:"id"`
	Category         string        `json:"category"`
	ProviderID       string        `json:"providerId"`
	Name             string        `json:"name"`
	Description      string        `json:"description,omitempty"`
	Tags             []string      `json:"tags,omitempty"`
	VisibleByDefault bool          `json:"visibleByDefault"`
	Status           CatalogStatus `json:"status"`
	CreatedAt        time.Time     `json:"createdAt"`
	UpdatedAt        time.Time     `json:"updatedAt"`
}

func (c CatalogEntry) Key() (partitionKey, id string) { return c.Category, c.ID }
func (CatalogEntry) Container() string                { return ContainerCatalog }

func (c CatalogEntry) Validate() error {
	var ve ValidationError
	checkID(&ve, "id", c.ID)
	checkCategory(&ve, "category", c.Category)
	checkID(&ve, "providerId", c.ProviderID)
	checkText(&ve, "name", c.Name, true, MaxNameLength)
	checkText(&ve, "description", c.Description, false, MaxDescriptionLength)
	if len(c.Tags) > 50 {
		ve.Add("tags", "must have at most 50 tags")
	}
	for i, t := range c.Tags {
		if !IsValidCategory(t) {
			ve.Add(indexField("tags", i), "must be a lowercase slug (letters, digits, '_' or '-', at most 64 characters)")
		}
	}
	checkEnum(&ve, "status", c.Status, CatalogPublished, CatalogDeprecated)
	return ve.Err()
}

// Visibility overrides a catalog entry's default for one tenant (container
// integration_visibility, partition "tenantId"). Its id is derived from the
// tenant and the catalog entry (VisibilityID), so a tenant has at most one
// override per entry and ids never repeat across tenants.
type Visibility struct {
	ID             string    `json:"id"`
	TenantID       string    `json:"tenantId"`
	CatalogEntryID string    `json:"catalogEntryId"`
	Visible        bool      `json:"visible"` // the tenant may see the entry
	Enabled        bool      `json:"enabled"` // the tenant may install it
	CreatedAt      time.Time `json:"createdAt"`
	UpdatedAt      time.Time `json:"updatedAt"`
}

// VisibilityID is the id of a tenant's override of one catalog entry.
func VisibilityID(tenantID, catalogEntryID string) string {
	return DeterministicID("vis", tenantID, catalogEntryID)
}

func (v Visibility) Key() (partitionKey, id string) { return v.TenantID, v.ID }
func (Visibility) Container() string                { return ContainerVisibility }

func (v Visibility) Validate() error {
	var ve ValidationError
	checkID(&ve, "tenantId", v.TenantID)
	checkID(&ve, "catalogEntryId", v.CatalogEntryID)
	if v.ID != VisibilityID(v.TenantID, v.CatalogEntryID) {
		ve.Add("id", "must be VisibilityID(tenantId, catalogEntryId)")
	}
	return ve.Err()
}
