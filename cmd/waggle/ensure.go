package main

import (
	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
)

// ensureFromSpec is v1's ensure body that creates the instance from a spec.
func ensureFromSpec(props api.InstanceProperties, spec api.InstanceSpec) (api.InstanceEnsureRequest, error) {
	var body api.InstanceEnsureRequest
	err := body.FromInstanceEnsureFromSpec(api.InstanceEnsureFromSpec{Properties: props, Spec: spec})
	return body, err
}

// ensureAsTarget is v1's ensure body that creates the instance as the
// target of a live migration.
func ensureAsTarget(props api.InstanceProperties, m api.InstanceMigrateInitiateRequest) (api.InstanceEnsureRequest, error) {
	var body api.InstanceEnsureRequest
	err := body.FromInstanceEnsureAsMigrationTarget(api.InstanceEnsureAsMigrationTarget{Properties: props, Migrate: m})
	return body, err
}
