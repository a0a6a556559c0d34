package sledclient

import (
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
)

func TestNegotiate(t *testing.T) {
	require.Equal(t, []string{"v1"}, Versions())
	for _, reg := range [][]string{{"v1"}, {"v2", "v1"}, {"v1", "v7"}, {"v9", "v1", "v3"}} {
		v, err := Negotiate(reg)
		require.NoError(t, err, "%v", reg)
		require.Equal(t, "v1", v, "%v", reg)
	}
	for _, reg := range [][]string{nil, {}, {"v2"}, {"V1"}, {"v1 "}, {"1"}} {
		_, err := Negotiate(reg)
		require.Error(t, err, "%v", reg)
		require.ErrorContains(t, err, "none in common")
		require.ErrorContains(t, err, `"v1"`, "the error names what the control plane speaks")
	}
	_, err := Negotiate([]string{"v5", "v6"})
	require.ErrorContains(t, err, `"v5" "v6"`, "and what the agent speaks")
}

// With several versions supported, the newest that the sled also speaks
// wins, whatever the order of its registration.
func TestPickNewestShared(t *testing.T) {
	table := []version{{name: "v3"}, {name: "v2"}, {name: "v1"}}
	for _, c := range []struct {
		reg  []string
		want string
	}{
		{[]string{"v1", "v2"}, "v2"},
		{[]string{"v2", "v1"}, "v2"},
		{[]string{"v1", "v3", "v2"}, "v3"},
		{[]string{"v4", "v1"}, "v1"},
		{[]string{"v1"}, "v1"},
	} {
		v, err := pick(table, c.reg)
		require.NoError(t, err)
		require.Equal(t, c.want, v.name, "%v", c.reg)
	}
	_, err := pick(table, []string{"v4"})
	require.Error(t, err)
}

// The dialer refuses a sled that shares no version with it, or whose
// address is not host:port, naming the sled.
func TestDialRefuses(t *testing.T) {
	dial := New(func(string) (string, error) { return testToken, nil })
	var _ controlplane.SledDialer = dial
	id := uuid.New()
	for _, s := range []model.Sled{
		{ID: id, Address: "10.0.0.7:12300", APIVersions: []string{"v2"}},
		{ID: id, Address: "10.0.0.7:12300"},
		{ID: id, Address: "10.0.0.7", APIVersions: []string{"v1"}},
		{ID: id, Address: ":12300", APIVersions: []string{"v1"}},
		{ID: id, Address: "10.0.0.7:0", APIVersions: []string{"v1"}},
		{ID: id, Address: "10.0.0.7:http", APIVersions: []string{"v1"}},
		{ID: id, Address: "a b/c:1", APIVersions: []string{"v1"}},
		{ID: id, Address: "ab/c:1", APIVersions: []string{"v1"}},
		{ID: id, Address: "u@h:1", APIVersions: []string{"v1"}},
		{ID: id, Address: "h:1#x", APIVersions: []string{"v1"}},
	} {
		c, err := dial(s)
		require.Error(t, err, "%+v", s)
		require.Nil(t, c)
		require.ErrorContains(t, err, id.String())
	}
	_, err := New(nil)(model.Sled{ID: id, Address: "h:1", APIVersions: []string{"v1"}})
	require.ErrorContains(t, err, "token")
}
