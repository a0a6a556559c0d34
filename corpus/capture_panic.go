package corpus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"time"
)

// The panic guest is what only version 2 can describe: the panic guest
// with a pvpanic device, under an explicit SMBIOS table. It is created and
// run over plain HTTP through /v2 (the CLI may speak either version), and
// gives version 2's own captured bodies: the ensure's 201 and the state
// change's 200 {gen}, the instance failed with the kind guest_panicked (the
// instance, its state monitor with the history, its spec, its console),
// and two errors as the server words them: no_instance before the ensure
// and invalid_transition for a run of the failed instance.

// capturedPanicEnsure is the panic guest's ensure request (v2): it ticks
// every 50 ms and panics after 20 ticks.
const capturedPanicEnsure = `{"init":{"method":"spec","spec":{"board":{"chipset":"i440fx","cpus":1,"memory_mb":32},` +
	`"boot":{"cmdline":"pace_ms=50 panic_after=20","image":"panic"},` +
	`"components":{"com1":{"num":"com1","type":"serial_port"},"panic0":{"type":"pvpanic"}},` +
	`"smbios":{"family":"corpus","manufacturer":"waggle corpus","product":"panic guest","serial_number":"CAPTURED-1","sku":"","version":"2"}}},` +
	`"properties":{"description":"the captured panic guest","id":"6f0d3c52-8a1e-4b7f-9c2d-5e4a3b2c1d0f","name":"panic"}}`

// capturePanic runs the panic guest on a server of its own.
func (c ServerCapture) capturePanic(ctx context.Context, bin, dir string, out captured) error {
	s, err := startCapServer(ctx, bin, dir, "panic", filepath.Join(dir, "panic-storage"), c.wait())
	if err != nil {
		return err
	}
	defer s.stop()
	c.log().Info("capture: a panic guest", "server", s.addr)
	return capturePanicOn(ctx, s, out, c.wait())
}

// capturePanicOn drives the panic guest on s, a server with no instance,
// and records version 2's files of it. A guest that does not end failed as
// guest_panicked is an error: nothing is recorded that says otherwise.
func capturePanicOn(ctx context.Context, s *capServer, out captured, wait time.Duration) error {
	steps := []struct {
		method, path, body string
		status             int
		kind, name         string
	}{
		{http.MethodGet, "/v2/instance", "", http.StatusNotFound, KindError, "no-instance"},
		{http.MethodPut, "/v2/instance", capturedPanicEnsure, http.StatusCreated, KindInstance, "panic-created"},
		{http.MethodPut, "/v2/instance/state", `{"requested":"run"}`, http.StatusOK, KindStateChangeResponse, "panic-run"},
	}
	for _, st := range steps {
		var body []byte
		if st.body != "" {
			body = []byte(st.body)
		}
		got, err := s.call(ctx, st.method, st.path, body, st.status)
		if err != nil {
			return err
		}
		out.put(capturedV2, st.kind, st.name, got)
	}
	inst, err := awaitFailed(ctx, s, wait)
	if err != nil {
		return err
	}
	out.put(capturedV2, KindInstance, "panic-failed", inst)
	for _, k := range []struct{ kind, name, path string }{
		{KindStateView, "panic-failed-history", "/v2/instance/state-monitor?gen=0"},
		{KindSpecView, "panic-failed", "/v2/instance/spec"},
		{KindSerialHistory, "panic", "/v2/instance/serial/history"},
	} {
		got, err := s.call(ctx, http.MethodGet, k.path, nil, http.StatusOK)
		if err != nil {
			return err
		}
		out.put(capturedV2, k.kind, k.name, got)
	}
	got, err := s.call(ctx, http.MethodPut, "/v2/instance/state", []byte(`{"requested":"run"}`), http.StatusConflict)
	if err != nil {
		return err
	}
	out.put(capturedV2, KindError, "invalid-transition", got)
	return nil
}

// awaitFailed polls GET /v2/instance until the instance is failed, within
// wait, and returns that body. It must have failed as guest_panicked; an
// instance that ends otherwise (destroyed, another kind) is an error.
func awaitFailed(ctx context.Context, s *capServer, wait time.Duration) ([]byte, error) {
	deadline := time.Now().Add(wait)
	for {
		body, err := s.call(ctx, http.MethodGet, "/v2/instance", nil, http.StatusOK)
		if err != nil {
			return nil, err
		}
		var inst struct {
			State   string `json:"state"`
			Failure *struct {
				Kind    string `json:"kind"`
				Message string `json:"message"`
			} `json:"failure"`
		}
		if err := json.Unmarshal(body, &inst); err != nil {
			return nil, fmt.Errorf("the %s server's instance: %w", s.name, err)
		}
		switch inst.State {
		case "failed":
			if inst.Failure == nil || inst.Failure.Kind != "guest_panicked" {
				return nil, fmt.Errorf("the %s server's guest failed, but not as guest_panicked: %s", s.name, body)
			}
			return body, nil
		case "destroyed", "stopped", "stopping":
			return nil, fmt.Errorf("the %s server's guest ended without a panic: %s", s.name, body)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the %s server's guest did not fail within %v: %s", s.name, wait, body)
		}
		select {
		case <-ctx.Done():
			return nil, errors.Join(errors.New("waiting for the panic"), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
