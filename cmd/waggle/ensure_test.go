package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
)

// specEnsure is v1's ensure body that creates an instance from spec.
func specEnsure(t testing.TB, props api.InstanceProperties, spec api.InstanceSpec) api.InstanceEnsureRequest {
	t.Helper()
	var body api.InstanceEnsureRequest
	require.NoError(t, body.FromInstanceEnsureFromSpec(api.InstanceEnsureFromSpec{Properties: props, Spec: spec}))
	return body
}

// targetEnsure is v1's ensure body that creates an instance as the target of
// migration m.
func targetEnsure(t testing.TB, props api.InstanceProperties, m api.InstanceMigrateInitiateRequest) api.InstanceEnsureRequest {
	t.Helper()
	var body api.InstanceEnsureRequest
	require.NoError(t, body.FromInstanceEnsureAsMigrationTarget(api.InstanceEnsureAsMigrationTarget{Properties: props, Migrate: m}))
	return body
}
