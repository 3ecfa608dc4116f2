package oci

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		name string
		json string
		ok   bool
	}{
		{"minimal", `{"ociVersion":"1.2.0","root":{"path":"rootfs"}}`, true},
		{"no version", `{"root":{"path":"rootfs"}}`, false},
		{"version 2", `{"ociVersion":"2.0.0","root":{"path":"rootfs"}}`, false},
		{"no root", `{"ociVersion":"1.2.0"}`, false},
		{"relative cwd", `{"ociVersion":"1.2.0","root":{"path":"r"},"process":{"cwd":"tmp","user":{}}}`, false},
		{"relative mount", `{"ociVersion":"1.2.0","root":{"path":"r"},"mounts":[{"destination":"proc","type":"proc"}]}`, false},
		{"bad ns", `{"ociVersion":"1.2.0","root":{"path":"r"},"linux":{"namespaces":[{"type":"bogus"}]}}`, false},
		{"dup ns", `{"ociVersion":"1.2.0","root":{"path":"r"},"linux":{"namespaces":[{"type":"pid"},{"type":"pid"}]}}`, false},
		{"maps without userns", `{"ociVersion":"1.2.0","root":{"path":"r"},"linux":{"uidMappings":[{"containerID":0,"hostID":1000,"size":1}]}}`, false},
		{"hostname without uts", `{"ociVersion":"1.2.0","root":{"path":"r"},"hostname":"x","linux":{}}`, false},
		{"rlimit soft above hard", `{"ociVersion":"1.2.0","root":{"path":"r"},"process":{"cwd":"/","user":{},"rlimits":[{"type":"RLIMIT_NOFILE","soft":10,"hard":5}]}}`, false},
		{"relative hook", `{"ociVersion":"1.2.0","root":{"path":"r"},"hooks":{"poststop":[{"path":"true"}]}}`, false},
		{"not json", `{`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSpec([]byte(tc.json))
			if tc.ok && err != nil {
				t.Fatalf("got %v, want nil", err)
			}
			if !tc.ok && !errors.Is(err, ErrInvalidBundle) {
				t.Fatalf("got %v, want ErrInvalidBundle", err)
			}
		})
	}
}

func TestLoadSpecResolvesRoot(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte(`{"ociVersion":"1.2.0","root":{"path":"rootfs"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "rootfs"); s.Root.Path != want {
		t.Fatalf("got %s, want %s", s.Root.Path, want)
	}
}

func FuzzParseSpec(f *testing.F) {
	f.Add([]byte(`{"ociVersion":"1.2.0","root":{"path":"rootfs"},"process":{"cwd":"/","user":{},"args":["sh"]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSpec(data)
		if err == nil && (s.Root == nil || s.Root.Path == "") {
			t.Fatal("accepted a spec without root.path")
		}
	})
}
