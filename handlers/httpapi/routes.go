package httpapi

import (
	"net/http"
	"strings"
)

// access says who may call a route.
type access int

const (
	accessPublic      access = iota // no bearer token (probes, metrics, the document, ingress)
	accessRead                      // any role, on its own tenant (viewer, tenant_admin, platform_admin)
	accessTenantWrite               // tenant_admin or platform_admin, on its own tenant
	accessPlatform                  // platform_admin: what all tenants share, and the poison queue
)

// roles names the roles of an access level, for the document.
func (x access) roles() []string {
	switch x {
	case accessRead:
		return []string{"viewer", "tenant_admin", "platform_admin"}
	case accessTenantWrite:
		return []string{"tenant_admin", "platform_admin"}
	case accessPlatform:
		return []string{"platform_admin"}
	}
	return nil
}

// bodyKind says what a route accepts as its request body.
type bodyKind int

const (
	bodyNone     bodyKind = iota // empty, or "{}"
	bodyJSON                     // a JSON object of the request schema
	bodyOptional                 // the request schema, or nothing
	bodyRaw                      // any bytes, kept as sent (ingress)
)

// queryParam documents one query parameter.
type queryParam struct {
	name, description string
}

var (
	qLimit  = queryParam{"limit", "page size, 1 to 1000 (default 50)"}
	qCursor = queryParam{"cursor", "nextCursor of the previous page"}
)

// route is one entry of the route table: how it is served and how it is documented.
type route struct {
	method, path string
	summary      string
	access       access
	// tenant marks routes acting on the caller's own tenant's data, which the
	// tenant isolation test walks.
	tenant   bool
	query    []queryParam
	body     bodyKind
	request  string // schema name of the request body
	response string // schema name of the success body; "" for none
	list     bool   // the success body is a page of response items
	status   int    // success status
	handle   handlerFunc
}

func (rt route) pattern() string { return rt.method + " " + rt.path }

// pathParams lists the {name} wildcards of the path in order.
func (rt route) pathParams() []string {
	var out []string
	for _, seg := range strings.Split(rt.path, "/") {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			out = append(out, strings.TrimSuffix(seg[1:len(seg)-1], "..."))
		}
	}
	return out
}

const v1 = "/api/v1"

// routes is the one table of the API.
func (a *api) routes() []route {
	const (
		get, post, put, patch, del = http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete
	)
	page := []queryParam{qLimit, qCursor}
	return []route{
		// Probes and documents.
		{method: get, path: "/healthz", summary: "Liveness: the process is serving", response: "Status", status: 200, handle: a.healthz},
		{method: get, path: "/readyz", summary: "Readiness: every dependency answers", response: "Status", status: 200, handle: a.readyz},
		{method: get, path: "/metrics", summary: "Prometheus metrics (text exposition format)", status: 200, handle: a.metricsHandler},
		{method: get, path: "/openapi.json", summary: "This OpenAPI 3.1 document", status: 200, handle: a.openapi},

		// Providers (platform admin).
		{method: post, path: v1 + "/providers", summary: "Create a provider definition", access: accessPlatform, body: bodyJSON, request: "Provider", response: "Provider", status: 201, handle: a.createProvider},
		{method: get, path: v1 + "/providers", summary: "List provider definitions", access: accessPlatform, query: append([]queryParam{{"category", "only this category"}}, page...), response: "Provider", list: true, status: 200, handle: a.listProviders},
		{method: get, path: v1 + "/providers/{id}", summary: "Read a provider definition", access: accessPlatform, response: "Provider", status: 200, handle: a.getProvider},
		{method: put, path: v1 + "/providers/{id}", summary: "Replace a provider definition (category cannot change)", access: accessPlatform, body: bodyJSON, request: "Provider", response: "Provider", status: 200, handle: a.putProvider},
		{method: del, path: v1 + "/providers/{id}", summary: "Delete a provider definition", access: accessPlatform, status: 204, handle: a.deleteProvider},

		// Catalog (platform admin writes; every tenant reads what is visible to it).
		{method: post, path: v1 + "/catalog", summary: "Create a catalog entry", access: accessPlatform, body: bodyJSON, request: "CatalogEntry", response: "CatalogEntry", status: 201, handle: a.createCatalogEntry},
		{method: get, path: v1 + "/catalog", summary: "List the catalog entries visible to the caller's tenant (all of them for a platform admin)", access: accessRead, query: append([]queryParam{{"category", "only this category"}}, page...), response: "CatalogEntry", list: true, status: 200, handle: a.listCatalog},
		{method: get, path: v1 + "/catalog/{id}", summary: "Read a catalog entry visible to the caller's tenant", access: accessRead, response: "CatalogEntry", status: 200, handle: a.getCatalogEntry},
		{method: put, path: v1 + "/catalog/{id}", summary: "Replace a catalog entry (category cannot change)", access: accessPlatform, body: bodyJSON, request: "CatalogEntry", response: "CatalogEntry", status: 200, handle: a.putCatalogEntry},
		{method: del, path: v1 + "/catalog/{id}", summary: "Delete a catalog entry", access: accessPlatform, status: 204, handle: a.deleteCatalogEntry},

		// Visibility (platform admin, for a named tenant).
		{method: get, path: v1 + "/visibility/{tenantId}", summary: "List a tenant's visibility overrides", access: accessPlatform, query: page, response: "Visibility", list: true, status: 200, handle: a.listVisibility},
		{method: put, path: v1 + "/visibility/{tenantId}/{catalogEntryId}", summary: "Set whether a tenant sees and may install a catalog entry", access: accessPlatform, body: bodyJSON, request: "VisibilityRequest", response: "Visibility", status: 200, handle: a.putVisibility},
		{method: get, path: v1 + "/visibility/{tenantId}/{catalogEntryId}", summary: "Read a tenant's visibility override", access: accessPlatform, response: "Visibility", status: 200, handle: a.getVisibility},
		{method: del, path: v1 + "/visibility/{tenantId}/{catalogEntryId}", summary: "Remove a tenant's visibility override (the entry's default applies again)", access: accessPlatform, status: 204, handle: a.deleteVisibility},

		// Integrations and connections (the caller's tenant).
		{method: post, path: v1 + "/integrations", summary: "Install a visible catalog entry; the ingress secret is returned once", access: accessTenantWrite, tenant: true, body: bodyJSON, request: "CreateIntegrationRequest", response: "IntegrationCreated", status: 201, handle: a.createIntegration},
		{method: get, path: v1 + "/integrations", summary: "List the tenant's integrations", access: accessRead, tenant: true, query: page, response: "Integration", list: true, status: 200, handle: a.listIntegrations},
		{method: get, path: v1 + "/integrations/{id}", summary: "Read an integration", access: accessRead, tenant: true, response: "Integration", status: 200, handle: a.getIntegration},
		{method: patch, path: v1 + "/integrations/{id}", summary: "Change an integration's name, settings or status", access: accessTenantWrite, tenant: true, body: bodyJSON, request: "PatchIntegrationRequest", response: "Integration", status: 200, handle: a.patchIntegration},
		{method: del, path: v1 + "/integrations/{id}", summary: "Uninstall an integration, its connection and its secrets", access: accessTenantWrite, tenant: true, status: 204, handle: a.deleteIntegration},
		{method: put, path: v1 + "/integrations/{id}/connection", summary: "Store the integration's credentials (kept in Secret Management) and mark it connected", access: accessTenantWrite, tenant: true, body: bodyJSON, request: "PutConnectionRequest", response: "Connection", status: 200, handle: a.putConnection},
		{method: get, path: v1 + "/integrations/{id}/connection", summary: "Read the connection status and credential reference (never the credentials)", access: accessRead, tenant: true, response: "Connection", status: 200, handle: a.getConnection},

		// Webhooks.
		{method: post, path: v1 + "/webhooks", summary: "Create a webhook endpoint; the signing secret is returned once", access: accessTenantWrite, tenant: true, body: bodyJSON, request: "CreateWebhookRequest", response: "WebhookCreated", status: 201, handle: a.createWebhook},
		{method: get, path: v1 + "/webhooks", summary: "List the tenant's webhook endpoints", access: accessRead, tenant: true, query: page, response: "Webhook", list: true, status: 200, handle: a.listWebhooks},
		{method: get, path: v1 + "/webhooks/{id}", summary: "Read a webhook endpoint (without its secret)", access: accessRead, tenant: true, response: "Webhook", status: 200, handle: a.getWebhook},
		{method: patch, path: v1 + "/webhooks/{id}", summary: "Change a webhook endpoint", access: accessTenantWrite, tenant: true, body: bodyJSON, request: "PatchWebhookRequest", response: "Webhook", status: 200, handle: a.patchWebhook},
		{method: del, path: v1 + "/webhooks/{id}", summary: "Delete a webhook endpoint and its secrets", access: accessTenantWrite, tenant: true, status: 204, handle: a.deleteWebhook},
		{method: post, path: v1 + "/webhooks/{id}/rotate-secret", summary: "Rotate the signing secret; the previous one keeps signing during the overlap", access: accessTenantWrite, tenant: true, body: bodyOptional, request: "RotateSecretRequest", response: "SecretRotated", status: 200, handle: a.rotateWebhookSecret},
		{method: post, path: v1 + "/webhooks/{id}/enable", summary: "Re-enable a disabled webhook endpoint", access: accessTenantWrite, tenant: true, response: "Webhook", status: 200, handle: a.enableWebhook},
		{method: post, path: v1 + "/webhooks/{id}/replay", summary: "Redeliver one delivery, or every failed_retrying or exhausted delivery since a time, as new attempts of the same delivery ids", access: accessTenantWrite, tenant: true, body: bodyJSON, request: "ReplayRequest", response: "ReplayAccepted", status: 202, handle: a.replayWebhook},

		// Sync tasks.
		{method: post, path: v1 + "/sync-tasks", summary: "Create a sync task", access: accessTenantWrite, tenant: true, body: bodyJSON, request: "SyncTaskRequest", response: "SyncTask", status: 201, handle: a.createSyncTask},
		{method: get, path: v1 + "/sync-tasks", summary: "List the tenant's sync tasks", access: accessRead, tenant: true, query: append([]queryParam{{"integrationId", "only this integration's tasks"}}, page...), response: "SyncTask", list: true, status: 200, handle: a.listSyncTasks},
		{method: get, path: v1 + "/sync-tasks/{id}", summary: "Read a sync task", access: accessRead, tenant: true, response: "SyncTask", status: 200, handle: a.getSyncTask},
		{method: put, path: v1 + "/sync-tasks/{id}", summary: "Replace a sync task's definition (its checkpoint is kept)", access: accessTenantWrite, tenant: true, body: bodyJSON, request: "SyncTaskRequest", response: "SyncTask", status: 200, handle: a.putSyncTask},
		{method: del, path: v1 + "/sync-tasks/{id}", summary: "Delete a sync task", access: accessTenantWrite, tenant: true, status: 204, handle: a.deleteSyncTask},
		{method: post, path: v1 + "/sync-tasks/{id}/runs", summary: "Enqueue a run of the sync task", access: accessTenantWrite, tenant: true, response: "RunAccepted", status: 202, handle: a.runSyncTask},
		{method: post, path: v1 + "/sync-tasks/{id}/reset", summary: "Forget the checkpoint: the next run re-reads everything (record state is kept, so only changes are written)", access: accessTenantWrite, tenant: true, response: "SyncTask", status: 200, handle: a.resetSyncTask},

		// Events, conflicts, executions.
		{method: post, path: v1 + "/events", summary: "Publish an event to the tenant's matching webhooks", access: accessTenantWrite, tenant: true, body: bodyJSON, request: "PublishEventRequest", response: "Accepted", status: 202, handle: a.publishEvent},
		{method: get, path: v1 + "/conflicts", summary: "List the tenant's conflicts", access: accessRead, tenant: true, query: append([]queryParam{{"status", "pending, resolved, escalated, superseded or failed"}}, page...), response: "Conflict", list: true, status: 200, handle: a.listConflicts},
		{method: get, path: v1 + "/conflicts/{id}", summary: "Read a conflict", access: accessRead, tenant: true, response: "Conflict", status: 200, handle: a.getConflict},
		{method: post, path: v1 + "/conflicts/{id}/resolution", summary: "Resolve a pending or escalated conflict", access: accessTenantWrite, tenant: true, body: bodyJSON, request: "ResolutionRequest", response: "Accepted", status: 202, handle: a.resolveConflict},
		{method: get, path: v1 + "/executions", summary: "List delivery attempts and sync runs", access: accessRead, tenant: true, query: append([]queryParam{{"kind", "webhook_delivery or sync_run"}, {"status", "an execution status"}, {"webhookId", "only this webhook's deliveries"}, {"deliveryId", "only this delivery's attempts (its state is its latest attempt's status)"}, {"syncTaskId", "only this task's runs"}}, page...), response: "Execution", list: true, status: 200, handle: a.listExecutions},
		{method: get, path: v1 + "/executions/{id}", summary: "Read an execution", access: accessRead, tenant: true, response: "Execution", status: 200, handle: a.getExecution},

		// Poison queue (operators).
		{method: get, path: v1 + "/poison", summary: "List poisoned messages", access: accessPlatform, query: page, response: "PoisonMessage", list: true, status: 200, handle: a.listPoison},
		{method: post, path: v1 + "/poison/{id}/republish", summary: "Re-publish a poisoned message to its topic", access: accessPlatform, response: "Accepted", status: 202, handle: a.republishPoison},

		// Ingress from external systems: authenticated by the provider's signature.
		{method: post, path: "/ingress/{integrationId}", summary: "Receive a signed post from an external system", body: bodyRaw, response: "Accepted", status: 202, handle: a.ingress},
	}
}

// register adds one route to the mux behind the request pipeline.
func (a *api) register(rt route) {
	a.mux.Handle(rt.pattern(), a.pipeline(rt))
	a.patterns = append(a.patterns, rt.pattern())
}
