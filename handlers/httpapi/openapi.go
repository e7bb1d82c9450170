package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/castiel/integration-manager/domain"
)

// The OpenAPI document is generated from the route table and the Go types of
// the bodies, so neither the paths nor the schemas can drift from the code.

// schemaTypes maps the schema names used in the route table to Go types.
func schemaTypes() map[string]any {
	return map[string]any{
		"Problem":                  Problem{},
		"Status":                   status{},
		"Provider":                 domain.Provider{},
		"CatalogEntry":             domain.CatalogEntry{},
		"Visibility":               domain.Visibility{},
		"VisibilityRequest":        visibilityRequest{},
		"CreateIntegrationRequest": createIntegrationRequest{},
		"PatchIntegrationRequest":  patchIntegrationRequest{},
		"Integration":              domain.Integration{},
		"IntegrationCreated":       integrationCreated{},
		"PutConnectionRequest":     putConnectionRequest{},
		"Connection":               domain.Connection{},
		"CreateWebhookRequest":     createWebhookRequest{},
		"PatchWebhookRequest":      patchWebhookRequest{},
		"Webhook":                  domain.WebhookEndpoint{},
		"WebhookCreated":           webhookCreated{},
		"RotateSecretRequest":      rotateSecretRequest{},
		"SecretRotated":            secretRotated{},
		"SyncTaskRequest":          syncTaskRequest{},
		"SyncTask":                 domain.SyncTask{},
		"RunAccepted":              runAccepted{},
		"PublishEventRequest":      publishEventRequest{},
		"Accepted":                 accepted{},
		"Conflict":                 domain.Conflict{},
		"ResolutionRequest":        resolutionRequest{},
		"Execution":                domain.Execution{},
		"ReplayRequest":            replayRequest{},
		"ReplayAccepted":           replayAccepted{},
		"PoisonMessage":            PoisonMessage{},
	}
}

type jsonObject = map[string]any

// openAPIDocument builds the OpenAPI 3.1 document of the routes.
func openAPIDocument(routes []route) ([]byte, error) {
	types := schemaTypes()
	schemas := make(jsonObject, len(types))
	for name, v := range types {
		schemas[name] = schemaOf(reflect.TypeOf(v))
	}
	ref := func(name string) (jsonObject, error) {
		if _, ok := types[name]; !ok {
			return nil, fmt.Errorf("httpapi: openapi: schema %q is not declared in schemaTypes", name)
		}
		return jsonObject{"$ref": "#/components/schemas/" + name}, nil
	}
	problem := jsonObject{"description": "An RFC 9457 problem", "content": jsonObject{problemContentType: jsonObject{"schema": jsonObject{"$ref": "#/components/schemas/Problem"}}}}

	paths := make(jsonObject)
	for _, rt := range routes {
		op := jsonObject{"summary": rt.summary, "operationId": operationID(rt)}
		var params []any
		for _, p := range rt.pathParams() {
			params = append(params, jsonObject{"name": p, "in": "path", "required": true, "schema": jsonObject{"type": "string"}})
		}
		for _, q := range rt.query {
			params = append(params, jsonObject{"name": q.name, "in": "query", "description": q.description, "schema": jsonObject{"type": "string"}})
		}
		if rt.access == accessPublic {
			op["security"] = []any{}
		} else {
			op["security"] = []any{jsonObject{"bearerAuth": []any{}}}
			op["x-roles"] = rt.access.roles()
			if rt.method == http.MethodPost {
				params = append(params, jsonObject{"name": HeaderIdempotencyKey, "in": "header",
					"description": "the same key with the same body returns the first answer and enqueues nothing again",
					"schema":      jsonObject{"type": "string", "maxLength": maxIdempotencyKeyLength}})
			}
		}
		if rt.method == http.MethodPut || rt.method == http.MethodPatch || rt.method == http.MethodDelete {
			params = append(params, jsonObject{"name": "If-Match", "in": "header",
				"description": "the ETag of the version this change is based on; 412 if it is no longer current",
				"schema":      jsonObject{"type": "string"}})
		}
		if len(params) > 0 {
			op["parameters"] = params
		}
		switch rt.body {
		case bodyJSON, bodyOptional:
			s, err := ref(rt.request)
			if err != nil {
				return nil, err
			}
			op["requestBody"] = jsonObject{"required": rt.body == bodyJSON, "content": jsonObject{"application/json": jsonObject{"schema": s}}}
		case bodyRaw:
			op["requestBody"] = jsonObject{"required": true, "description": "the external system's post, verified by its signature headers",
				"content": jsonObject{"*/*": jsonObject{"schema": jsonObject{}}}}
		}
		success := jsonObject{"description": http.StatusText(rt.status)}
		switch {
		case rt.response == "" && rt.path == "/metrics":
			success["content"] = jsonObject{"text/plain": jsonObject{"schema": jsonObject{"type": "string"}}}
		case rt.response == "" && rt.path == "/openapi.json":
			success["content"] = jsonObject{"application/json": jsonObject{"schema": jsonObject{"type": "object"}}}
		case rt.response != "":
			s, err := ref(rt.response)
			if err != nil {
				return nil, err
			}
			if rt.list {
				s = jsonObject{"type": "object", "properties": jsonObject{
					"items":      jsonObject{"type": "array", "items": s},
					"nextCursor": jsonObject{"type": "string", "description": "pass as ?cursor= for the next page; absent on the last page"},
				}, "required": []string{"items"}}
			}
			success["content"] = jsonObject{"application/json": jsonObject{"schema": s}}
		}
		op["responses"] = jsonObject{fmt.Sprint(rt.status): success, "default": problem}
		item, _ := paths[rt.path].(jsonObject)
		if item == nil {
			item = make(jsonObject)
			paths[rt.path] = item
		}
		item[strings.ToLower(rt.method)] = op
	}
	doc := jsonObject{
		"openapi": "3.1.0",
		"info": jsonObject{
			"title":   "Castiel Integration Manager command API",
			"version": "1.0.0",
			"description": "Thin command API: it validates, authorises, writes configuration and enqueues work. " +
				"The tenant is always the caller's. Errors are RFC 9457 problems (application/problem+json); " +
				"list answers are pages {items, nextCursor}; single resources carry an ETag honoured by If-Match.",
		},
		"paths": paths,
		"components": jsonObject{
			"schemas":         schemas,
			"securitySchemes": jsonObject{"bearerAuth": jsonObject{"type": "http", "scheme": "bearer"}},
		},
	}
	return json.MarshalIndent(doc, "", "  ")
}

// operationID is the method and path in camel case ("getApiV1WebhooksById").
func operationID(rt route) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(rt.method))
	for _, seg := range strings.Split(rt.path, "/") {
		if seg == "" {
			continue
		}
		if strings.HasPrefix(seg, "{") {
			seg = "by-" + strings.Trim(seg, "{}.")
		}
		for _, word := range strings.FieldsFunc(seg, func(r rune) bool { return r == '-' || r == '.' || r == '_' }) {
			b.WriteString(strings.ToUpper(word[:1]) + word[1:])
		}
	}
	return b.String()
}

var (
	timeType    = reflect.TypeOf(time.Time{})
	rawJSONType = reflect.TypeOf(json.RawMessage(nil))
)

// schemaOf is the JSON Schema of how encoding/json writes a value of t.
func schemaOf(t reflect.Type) jsonObject {
	switch {
	case t == timeType:
		return jsonObject{"type": "string", "format": "date-time"}
	case t == rawJSONType:
		return jsonObject{"description": "any JSON value"}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return schemaOf(t.Elem())
	case reflect.String:
		return jsonObject{"type": "string"}
	case reflect.Bool:
		return jsonObject{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return jsonObject{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return jsonObject{"type": "number"}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return jsonObject{"type": "string", "contentEncoding": "base64"}
		}
		return jsonObject{"type": "array", "items": schemaOf(t.Elem())}
	case reflect.Map:
		return jsonObject{"type": "object", "additionalProperties": schemaOf(t.Elem())}
	case reflect.Interface:
		return jsonObject{"description": "any JSON value"}
	case reflect.Struct:
		props := make(jsonObject)
		addFields(t, props)
		return jsonObject{"type": "object", "properties": props}
	}
	return jsonObject{}
}

// addFields adds the JSON properties of a struct, flattening embedded structs
// as encoding/json does.
func addFields(t reflect.Type, props jsonObject) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			addFields(f.Type, props)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		props[name] = schemaOf(f.Type)
	}
}

func (a *api) openapi(c *call) error {
	c.w.Header().Set("Content-Type", "application/json")
	_, _ = c.w.Write(a.document)
	return nil
}
