package v1

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/internal/apicheck"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
	api "github.com/wagglevm/waggle/gen/control-plane-internal/v1"
	"github.com/wagglevm/waggle/internal/httpkit"
)

// Every runtime error has its status and code, and a 5xx message says
// nothing of the runtime's own words.
func TestClassify(t *testing.T) {
	cases := []struct {
		err    error
		status int
		code   string
	}{
		{&unknownVmm{errors.New("no VMM x")}, 404, CodeNoSuchVmm},
		{fmt.Errorf("ring: %w", &unknownVmm{errors.New("no VMM x")}), 404, CodeNoSuchVmm},
		{&fieldError{"body.address", "bad"}, 400, httpkit.CodeInvalidRequest},
		{fmt.Errorf("register: dial db.secret.host: %w", controlplane.ErrUnavailable), 503, CodeUnavailable},
		{controlplane.ErrUnavailable, 503, CodeUnavailable},
		// A not-found that the handler did not turn into unknownVmm is no
		// 404: only a ring's unknown VMM is no_such_vmm.
		{fmt.Errorf("register: db.secret.host: %w", controlplane.ErrNotFound), 500, httpkit.CodeInternal},
		{fmt.Errorf("register: db.secret.host: %w", controlplane.ErrConflict), 500, httpkit.CodeInternal},
		{errors.New("db.secret.host exploded"), 500, httpkit.CodeInternal},
		{context.Canceled, 500, httpkit.CodeInternal},
		{httpkit.Errorf(http.StatusRequestEntityTooLarge, httpkit.CodeBodyTooLarge, "big"), 413, httpkit.CodeBodyTooLarge},
	}
	for _, c := range cases {
		e := classify(c.err)
		require.Equal(t, c.status, e.Status, "%v", c.err)
		require.Equal(t, c.code, e.Code, "%v", c.err)
		require.Contains(t, Codes, e.Code)
		if e.Status >= 500 {
			require.NotContains(t, e.Message, "db.secret.host")
		}
	}
}

type stubRuntime struct{ ring, register error }

func (s stubRuntime) Ring(context.Context, uuid.UUID) error          { return s.ring }
func (s stubRuntime) RegisterSled(context.Context, model.Sled) error { return s.register }

// The doorbell turns only the runtime's ErrNotFound into no_such_vmm; a
// registration never answers it.
func TestHandlersMapErrors(t *testing.T) {
	ctx := context.Background()
	id := uuid.New()
	notFound := fmt.Errorf("x: %w", controlplane.ErrNotFound)
	_, err := (&Server{rt: stubRuntime{ring: notFound}}).VmmChanged(ctx, api.VmmChangedRequestObject{VmmId: id})
	require.Equal(t, CodeNoSuchVmm, classify(err).Code)
	require.Contains(t, classify(err).Message, id.String())

	body := api.SledRegistration{Address: "h:1", ApiVersions: []string{"v1"}, Capacity: api.SledCapacity{Cpus: 1, MemoryMib: 1}}
	_, err = (&Server{rt: stubRuntime{register: notFound}}).SledRegister(ctx, api.SledRegisterRequestObject{SledId: id, Body: &body})
	require.Equal(t, 500, classify(err).Status)

	resp, err := (&Server{rt: stubRuntime{}}).VmmChanged(ctx, api.VmmChangedRequestObject{VmmId: id})
	require.NoError(t, err)
	require.IsType(t, api.VmmChanged202Response{}, resp)
}

// SledFromV1 stands without the validator: every rule the contract's
// schema states is checked again, with the field named.
func TestSledFromV1(t *testing.T) {
	id := uuid.New()
	good := api.SledRegistration{Address: "10.0.0.7:12300", ApiVersions: []string{"v3", "v1"},
		Capacity: api.SledCapacity{Cpus: 4, MemoryMib: 1024}}
	s, err := SledFromV1(id, good)
	require.NoError(t, err)
	require.Equal(t, model.Sled{ID: id, Address: "10.0.0.7:12300", APIVersions: []string{"v3", "v1"},
		Capacity: model.Resources{CPUs: 4, MemoryMiB: 1024}}, s)
	s.APIVersions[0] = "v9"
	require.Equal(t, "v3", good.ApiVersions[0], "the sled does not share the request's slice")

	cases := []struct {
		edit  func(*api.SledRegistration)
		field string
	}{
		{func(b *api.SledRegistration) { b.Address = "" }, "body.address"},
		{func(b *api.SledRegistration) { b.Address = "[::]:1" }, "body.address"},
		{func(b *api.SledRegistration) { b.Address = "0.0.0.0:1" }, "body.address"},
		{func(b *api.SledRegistration) { b.Address = "h:65536" }, "body.address"},
		{func(b *api.SledRegistration) { b.Address = "h:-1" }, "body.address"},
		{func(b *api.SledRegistration) { b.Address = "user@h:1" }, "body.address"},
		{func(b *api.SledRegistration) { b.Address = "h?q=1:1" }, "body.address"},
		{func(b *api.SledRegistration) { b.Address = "h#f:1" }, "body.address"},
		{func(b *api.SledRegistration) { b.ApiVersions = nil }, "body.api_versions"},
		{func(b *api.SledRegistration) { b.ApiVersions = []string{"v01"} }, "body.api_versions.0"},
		{func(b *api.SledRegistration) { b.ApiVersions = []string{"v1", "v2", "v1"} }, "body.api_versions.2"},
		{func(b *api.SledRegistration) { b.Capacity.Cpus = 0 }, "body.capacity.cpus"},
		{func(b *api.SledRegistration) { b.Capacity.Cpus = -5 }, "body.capacity.cpus"},
		{func(b *api.SledRegistration) { b.Capacity.MemoryMib = -1 }, "body.capacity.memory_mib"},
		{func(b *api.SledRegistration) { b.Capacity.MemoryMib = 1 << 53 }, "body.capacity.memory_mib"},
	}
	for _, c := range cases {
		b := good
		b.ApiVersions = slices.Clone(good.ApiVersions)
		c.edit(&b)
		_, err := SledFromV1(id, b)
		var fe *fieldError
		require.ErrorAs(t, err, &fe, "%+v", b)
		require.Equal(t, c.field, fe.Field, "%+v: %v", b, err)
	}
	_, err = SledFromV1(uuid.Nil, good)
	require.ErrorContains(t, err, "sled_id")
}

// notInContractYet are codes the control plane answers that the v1
// contract does not list yet (the contract is not the control plane's to
// edit from here); each must be added to its error paragraph and then
// removed from this list.
var notInContractYet = []string{}

// The contract's error paragraph lists every code this package answers
// (but those not in it yet), and every code the contract names is one
// answered: the set is closed on both sides.
func TestContractListsEveryCode(t *testing.T) {
	doc, err := api.GetSwagger()
	require.NoError(t, err)
	para := apicheck.ErrorParagraph(doc)
	require.NotEmpty(t, para, "the contract has no error paragraph")
	for _, c := range Codes {
		if slices.Contains(notInContractYet, c) {
			require.NotContains(t, para, "`"+c+"`", "the contract lists %s now: drop it from notInContractYet", c)
			continue
		}
		require.Contains(t, para, "`"+c+"`", "the contract does not list %s", c)
	}
	for _, c := range apicheck.QuotedCodes(para) {
		if c == "error_code" || c == "message" || c == "request_id" {
			continue
		}
		require.True(t, slices.Contains(Codes, c), "the error paragraph names %s, which is never answered", c)
	}
	for name, codes := range apicheck.ResponseCodes(doc) {
		for _, c := range codes {
			require.True(t, slices.Contains(Codes, c), "response %s names %s, which is never answered", name, c)
		}
	}
}

// blockingRuntime answers only when its context ends.
type blockingRuntime struct{}

func (blockingRuntime) Ring(ctx context.Context, _ uuid.UUID) error {
	<-ctx.Done()
	return fmt.Errorf("query: %w", ctx.Err())
}

func (blockingRuntime) RegisterSled(ctx context.Context, _ model.Sled) error {
	<-ctx.Done()
	return fmt.Errorf("insert: %w", ctx.Err())
}

// A runtime that hangs (a database that does not answer) is cut off after
// the timeout and answered 503, not left holding the agent's request; a
// client that went away is not the runtime's unavailability.
func TestRuntimeTimeout(t *testing.T) {
	s := &Server{rt: blockingRuntime{}, timeout: 50 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := s.VmmChanged(ctx, api.VmmChangedRequestObject{VmmId: uuid.New()})
	require.Equal(t, http.StatusServiceUnavailable, classify(err).Status, "%v", err)
	body := api.SledRegistration{Address: "h:1", ApiVersions: []string{"v1"}, Capacity: api.SledCapacity{Cpus: 1, MemoryMib: 1}}
	_, err = s.SledRegister(ctx, api.SledRegisterRequestObject{SledId: uuid.New(), Body: &body})
	require.Equal(t, http.StatusServiceUnavailable, classify(err).Status, "%v", err)

	gone, stop := context.WithCancel(context.Background())
	stop()
	_, err = s.VmmChanged(gone, api.VmmChangedRequestObject{VmmId: uuid.New()})
	require.Equal(t, http.StatusInternalServerError, classify(err).Status, "%v", err)
}
