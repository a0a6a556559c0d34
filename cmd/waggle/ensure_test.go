package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
)

// specEnsure is the ensure body that creates an instance from spec.
func specEnsure(t testing.TB, props api.InstanceProperties, spec api.InstanceSpec) api.InstanceEnsureRequest {
	t.Helper()
	body, err := ensureFromSpec(props, spec)
	require.NoError(t, err)
	return body
}

// targetEnsure is the ensure body that creates an instance as the target of
// migration m.
func targetEnsure(t testing.TB, props api.InstanceProperties, m api.InstanceMigrateInitiateRequest) api.InstanceEnsureRequest {
	t.Helper()
	body, err := ensureAsTarget(props, m)
	require.NoError(t, err)
	return body
}
