package v1

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
	api "github.com/wagglevm/waggle/gen/control-plane/v1"
	"github.com/wagglevm/waggle/internal/httpkit"
)

// tokenPattern is the contract's pattern of a PageToken.
var tokenPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,256}$`)

// instancesNamed makes n instances with distinct names, in no order.
func instancesNamed(n int) []controlplane.InstanceView {
	out := make([]controlplane.InstanceView, 0, n)
	for i := range n {
		v := tickerView()
		// Reverse order, so the list's order is the store's, not the input's.
		v.Instance.ID, v.Instance.Name = uuid.New(), fmt.Sprintf("vm-%04d", n-i)
		out = append(out, v)
	}
	return out
}

func sledsN(n int) []controlplane.SledView {
	out := make([]controlplane.SledView, 0, n)
	for range n {
		out = append(out, controlplane.SledView{Sled: model.Sled{ID: uuid.New(), Address: "10.0.0.7:12300", APIVersions: []string{"v1"},
			State: model.SledActive, Capacity: model.Resources{CPUs: 16, MemoryMiB: 65536}, TimeCreated: t0, LastContact: t0}})
	}
	return out
}

// follow reads every page of path, limit a page (0: the default), and
// answers the pages' keys; it checks each page on the way.
func follow(t *testing.T, get func(token string) answer, key func([]byte) ([]string, *string), limit int) [][]string {
	t.Helper()
	var pages [][]string
	token := ""
	for range 1000 {
		a := get(token)
		require.Equal(t, 200, a.status, "%s", a.body)
		keys, next := key(a.body)
		require.LessOrEqual(t, len(keys), limit, "a page holds at most the limit")
		pages = append(pages, keys)
		if next == nil {
			return pages
		}
		require.Regexp(t, tokenPattern, *next, "the token is what the contract says")
		require.Len(t, keys, limit, "a page that is not the last is full")
		token = *next
	}
	t.Fatal("the pages never end")
	return nil
}

func TestInstancePagesCoverEveryInstanceOnceInOrder(t *testing.T) {
	for _, limit := range []int{7, 0} {
		eff := limit
		if eff == 0 {
			eff = DefaultPageLimit
		}
		for _, n := range []int{0, 1, eff - 1, eff, eff + 1, 3*eff + 2} {
			t.Run(fmt.Sprintf("limit=%d/n=%d", limit, n), func(t *testing.T) {
				ops := newFakeOps()
				ops.listed = instancesNamed(n)
				srv := serve(t, ops)
				get := func(token string) answer {
					q := url.Values{}
					if limit != 0 {
						q.Set("limit", fmt.Sprint(limit))
					}
					if token != "" {
						q.Set("page_token", token)
					}
					return call(t, srv, "GET", "/instances?"+q.Encode(), "")
				}
				key := func(b []byte) ([]string, *string) {
					var l api.InstanceList
					require.NoError(t, json.Unmarshal(b, &l))
					names := []string{}
					for _, in := range l.Instances {
						names = append(names, in.Name)
					}
					return names, l.NextPageToken
				}
				pages := follow(t, get, key, eff)
				want := []string{}
				for _, v := range ops.listed {
					want = append(want, v.Instance.Name)
				}
				slices.Sort(want)
				require.Equal(t, want, append([]string{}, slices.Concat(pages...)...), "every instance exactly once, by name")
				require.Len(t, pages, max(1, (n+eff-1)/eff), "no empty page after a full last one")
			})
		}
	}
}

func TestSledPagesCoverEverySledOnceInOrder(t *testing.T) {
	const limit = 5
	for _, n := range []int{0, 1, limit, limit + 1, 3*limit + 2} {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			ops := newFakeOps()
			ops.sleds = sledsN(n)
			srv := serve(t, ops)
			get := func(token string) answer {
				path := fmt.Sprintf("/sleds?limit=%d", limit)
				if token != "" {
					path += "&page_token=" + url.QueryEscape(token)
				}
				return call(t, srv, "GET", path, "")
			}
			key := func(b []byte) ([]string, *string) {
				var l api.SledList
				require.NoError(t, json.Unmarshal(b, &l))
				ids := []string{}
				for _, s := range l.Sleds {
					ids = append(ids, s.Id.String())
				}
				return ids, l.NextPageToken
			}
			pages := follow(t, get, key, limit)
			want := []string{}
			for _, s := range ops.sleds {
				want = append(want, s.Sled.ID.String())
			}
			slices.Sort(want)
			require.Equal(t, want, append([]string{}, slices.Concat(pages...)...), "every sled exactly once, by id")
			require.Len(t, pages, max(1, (n+limit-1)/limit))
		})
	}
}

// The handler asks the operations for one more than the limit, after the
// key the token holds.
func TestPageAsksOneMoreAfterTheToken(t *testing.T) {
	ops := newFakeOps()
	ops.listed = instancesNamed(3)
	srv := serve(t, ops)
	a := call(t, srv, "GET", "/instances?limit=2", "")
	require.Equal(t, 200, a.status, "%s", a.body)
	require.Equal(t, `list after "" limit 3`, ops.lastCall())
	var l api.InstanceList
	require.NoError(t, json.Unmarshal(a.body, &l))
	require.NotNil(t, l.NextPageToken)
	a = call(t, srv, "GET", "/instances?limit=2&page_token="+*l.NextPageToken, "")
	require.Equal(t, 200, a.status, "%s", a.body)
	require.Equal(t, `list after "vm-0002" limit 3`, ops.lastCall())
}

func TestBadPageParametersAre400NamingTheField(t *testing.T) {
	ops := newFakeOps()
	srv := serve(t, ops)
	enc := func(v any) string {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	sledToken := encodePageToken(listSleds, sledA.String())
	instToken := encodePageToken(listInstances, "ticker")
	cases := []struct{ path, field string }{
		{"/instances?limit=0", "limit"},
		{"/instances?limit=1001", "limit"},
		{"/instances?limit=-1", "limit"},
		{"/instances?limit=ten", "limit"},
		{"/sleds?limit=0", "limit"},
		{"/sleds?limit=1001", "limit"},
		{"/instances?page_token=", "page_token"},
		{"/instances?page_token=" + url.QueryEscape("a+b/c="), "page_token"},
		{"/instances?page_token=" + strings.Repeat("A", 257), "page_token"},
		{"/instances?page_token=garbage", "page_token"},
		{"/instances?page_token=" + base64.RawURLEncoding.EncodeToString([]byte("not json")), "page_token"},
		{"/instances?page_token=" + enc(map[string]any{"v": 2, "list": "instances", "after": "ticker"}), "page_token"},
		{"/instances?page_token=" + enc(map[string]any{"v": 1, "list": "instances", "after": "Not A Name"}), "page_token"},
		{"/instances?page_token=" + enc(map[string]any{"v": 1, "list": "instances", "after": ""}), "page_token"},
		{"/instances?page_token=" + enc(map[string]any{"v": 1, "list": "instances", "after": "ticker", "x": 1}), "page_token"},
		{"/instances?page_token=" + base64.RawURLEncoding.EncodeToString([]byte(`{"v":1,"list":"instances","after":"ticker"}{}`)), "page_token"},
		{"/instances?page_token=" + sledToken, "page_token"},
		{"/sleds?page_token=" + instToken, "page_token"},
		{"/sleds?page_token=" + enc(map[string]any{"v": 1, "list": "sleds", "after": strings.ToUpper(sledA.String())}), "page_token"},
		{"/sleds?page_token=" + enc(map[string]any{"v": 1, "list": "sleds", "after": "ticker"}), "page_token"},
	}
	for _, c := range cases {
		before := len(ops.calls)
		a := call(t, srv, "GET", c.path, "")
		require.Equal(t, 400, a.status, "%s: %s", c.path, a.body)
		e := a.errBody(t)
		require.Equal(t, httpkit.CodeInvalidRequest, e.ErrorCode, c.path)
		require.Contains(t, e.Message, c.field, c.path)
		require.Len(t, ops.calls, before, "%s: a refused page asks the operations nothing", c.path)
	}
	// The tokens themselves are good for their own lists.
	require.Equal(t, 200, call(t, srv, "GET", "/instances?page_token="+instToken, "").status)
	require.Equal(t, 200, call(t, srv, "GET", "/sleds?page_token="+sledToken, "").status)
}

// A token of the longest name and of a sled stays within the contract's
// bounds, and decodes to its key.
func TestPageTokenRoundTrip(t *testing.T) {
	long := "a" + strings.Repeat("b-", 30) + "cd"
	require.NoError(t, CheckName(long))
	require.Len(t, long, 63)
	for _, c := range []struct{ list, key string }{{listInstances, long}, {listInstances, "t"}, {listSleds, sledA.String()}} {
		tok := encodePageToken(c.list, c.key)
		require.Regexp(t, tokenPattern, tok)
		got, err := decodePageToken(c.list, tok)
		require.NoError(t, err)
		require.Equal(t, c.key, got)
	}
}

// A page's token is one string: the same content spelled otherwise (a key
// in another case, spaces, another order, an escape) is refused, though
// encoding/json would read each.
func TestPageTokenRefusesOtherSpellings(t *testing.T) {
	id := sledA.String()
	require.Equal(t, base64.RawURLEncoding.EncodeToString([]byte(`{"v":1,"list":"sleds","after":"`+id+`"}`)),
		encodePageToken(listSleds, id), "the one spelling")
	for _, js := range []string{
		`{"v":1,"list":"sleds","aFter":"` + id + `"}`,
		`{"V":1,"list":"sleds","after":"` + id + `"}`,
		`{"v":1, "list":"sleds","after":"` + id + `"}`,
		`{"list":"sleds","v":1,"after":"` + id + `"}`,
		`{"v":1,"list":"sl\u0065ds","after":"` + id + `"}`,
		`{"v":1,"list":"sleds","after":"` + id + `"}` + "\n",
	} {
		_, err := decodePageToken(listSleds, base64.RawURLEncoding.EncodeToString([]byte(js)))
		var fe *fieldError
		require.ErrorAs(t, err, &fe, "%s", js)
		require.Contains(t, fe.Field, "page_token")
	}
}

// FuzzPageToken: a page token never panics the decoder; what it accepts
// is a key of its list that encodes back to the same token, and a refusal
// names page_token.
func FuzzPageToken(f *testing.F) {
	f.Add(encodePageToken(listInstances, "ticker"))
	f.Add(encodePageToken(listSleds, sledA.String()))
	f.Add("")
	f.Add("e30")
	f.Fuzz(func(t *testing.T, raw string) {
		for _, list := range []string{listInstances, listSleds} {
			key, err := decodePageToken(list, raw)
			if err != nil {
				fe, ok := err.(*fieldError)
				if !ok || !strings.Contains(fe.Field, "page_token") {
					t.Fatalf("decode %q: %v does not name page_token", raw, err)
				}
				continue
			}
			if encodePageToken(list, key) != raw {
				t.Fatalf("decode %q as %s = %q, which encodes otherwise", raw, list, key)
			}
		}
	})
}

// The corpus's first pages carry tokens this handler reads back to their
// page's last key, for their own list only: the corpus shows real tokens.
func TestCorpusPageTokensAreReal(t *testing.T) {
	for _, c := range []struct{ file, list, other string }{
		{"../../../corpus/control-plane/v1/instance-list/first-page.json", listInstances, listSleds},
		{"../../../corpus/control-plane/v1/sled-list/first-page.json", listSleds, listInstances},
	} {
		raw, err := os.ReadFile(c.file)
		require.NoError(t, err)
		var page struct {
			Instances     []api.Instance `json:"instances"`
			Sleds         []api.Sled     `json:"sleds"`
			NextPageToken *string        `json:"next_page_token"`
		}
		require.NoError(t, json.Unmarshal(raw, &page))
		require.NotNil(t, page.NextPageToken, c.file)
		key, err := decodePageToken(c.list, *page.NextPageToken)
		require.NoError(t, err, c.file)
		if c.list == listInstances {
			require.Equal(t, page.Instances[len(page.Instances)-1].Name, key)
		} else {
			require.Equal(t, page.Sleds[len(page.Sleds)-1].Id.String(), key)
		}
		_, err = decodePageToken(c.other, *page.NextPageToken)
		require.Error(t, err, "%s: a token of one list is refused by the other", c.file)
	}
}
