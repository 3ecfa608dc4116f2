// Package testutil holds the helpers every test package of cryo shares: the
// root requirement and the rule that a skip under CI=true is a failure, so a
// green CI run never hides an engine that was not tested.
package testutil

import (
	"os"
	"testing"
)

// InCI reports whether the tests run under CI (CI=true), where nothing that
// needs this machine's privileges may be skipped.
func InCI() bool {
	return os.Getenv("CI") == "true"
}

// SkipOrFail skips the test with the reason, or fails it when running under CI.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("under CI=true this test must run: "+format, args...)
	}
	t.Skipf(format, args...)
}

// RequiresRoot skips the test when not running as root (fails under CI).
func RequiresRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "requires root")
	}
}
