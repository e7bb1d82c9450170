package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestSecret_EveryRenderingIsRedacted(t *testing.T) {
	s := Secret("hunter2-hunter2")
	type holder struct{ S Secret }
	jsonBytes, _ := json.Marshal(holder{s})
	yamlBytes, _ := yaml.Marshal(holder{s})
	var slogBuf bytes.Buffer
	slog.New(slog.NewJSONHandler(&slogBuf, nil)).Info("m", "s", s)

	renderings := map[string]string{
		"String":  s.String(),
		"%v":      fmt.Sprintf("%v", s),
		"%s":      fmt.Sprintf("%s", s),
		"%q":      fmt.Sprintf("%q", s),
		"%x":      fmt.Sprintf("%x", s),
		"%#v":     fmt.Sprintf("%#v", s),
		"%+v":     fmt.Sprintf("%+v", holder{s}),
		"Println": fmt.Sprintln(s),
		"JSON":    string(jsonBytes),
		"YAML":    string(yamlBytes),
		"slog":    slogBuf.String(),
	}
	for name, got := range renderings {
		if bytes.Contains([]byte(got), []byte("hunter2")) || !bytes.Contains([]byte(got), []byte("[redacted]")) {
			t.Errorf("%s rendering = %q, want [redacted] and no secret", name, got)
		}
	}
	if s.Reveal() != "hunter2-hunter2" {
		t.Errorf("Reveal() = %q, want the value", s.Reveal())
	}
}
