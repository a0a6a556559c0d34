package db

import (
	"fmt"
	"slices"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane/model"
)

// instancePages reads every page of the instances, limit a page, as the
// external API does (one more than the limit, to know a next page is
// there), and answers each page's names.
func instancePages(t *testing.T, f *fixture, limit int) [][]string {
	t.Helper()
	var pages [][]string
	after := ""
	for range 1000 {
		ins, err := f.d.InstancesAfter(f.ctx, after, limit+1)
		require.NoError(t, err)
		require.LessOrEqual(t, len(ins), limit+1)
		more := len(ins) > limit
		if more {
			ins = ins[:limit]
		}
		var names []string
		for _, in := range ins {
			names = append(names, in.Name)
		}
		pages = append(pages, names)
		if !more {
			return pages
		}
		after = names[len(names)-1]
	}
	t.Fatal("the pages never end")
	return nil
}

// Keyset pages of the instances hold each instance not destroyed exactly
// once, by name, for counts around the limit; a destroyed instance is on
// none.
func TestInstancesAfterPagesCoverEachOnce(t *testing.T) {
	const limit = 4
	for _, n := range []int{0, 1, limit, limit + 1, 3*limit + 2} {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			d, ctx := openT(t)
			f := &fixture{d: d, ctx: ctx}
			want := []string{}
			for i := range n {
				name := fmt.Sprintf("vm-%02d", n-1-i) // created in reverse
				f.addInstance(t, name)
				want = append(want, name)
			}
			gone := f.addInstance(t, "vm-gone")
			r := gone.Runtime
			r.State, r.Gen = model.InstanceDestroyed, 2
			_, err := f.d.UpdateInstanceRuntime(ctx, gone.ID, r)
			require.NoError(t, err)
			slices.Sort(want)

			pages := instancePages(t, f, limit)
			require.Equal(t, want, append([]string{}, slices.Concat(pages...)...))
			require.Len(t, pages, max(1, (n+limit-1)/limit), "no empty page after a full last one")
		})
	}
}

// Instances created and deleted between pages: what exists from the first
// page to the last appears once; a new name before where the reader is
// is not seen, one after it is.
func TestInstancesAfterBetweenPages(t *testing.T) {
	d, ctx := openT(t)
	f := &fixture{d: d, ctx: ctx}
	for _, name := range []string{"b", "d", "f", "h"} {
		f.addInstance(t, name)
	}
	first, err := d.InstancesAfter(ctx, "", 2)
	require.NoError(t, err)
	require.Equal(t, "d", first[1].Name)
	f.addInstance(t, "a")
	f.addInstance(t, "e")
	rest, err := d.InstancesAfter(ctx, "d", 10)
	require.NoError(t, err)
	var names []string
	for _, in := range rest {
		names = append(names, in.Name)
	}
	require.Equal(t, []string{"e", "f", "h"}, names)

	_, err = d.InstancesAfter(ctx, "", 0)
	require.Error(t, err, "a limit below 1 is refused")
}

// Keyset pages of the sleds hold each sled exactly once, by id.
func TestSledsAfterPagesCoverEachOnce(t *testing.T) {
	const limit = 3
	for _, n := range []int{0, 1, limit, limit + 1, 3*limit + 2} {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			d, ctx := openT(t)
			f := &fixture{d: d, ctx: ctx}
			want := []uuid.UUID{}
			for range n {
				want = append(want, f.addSled(t, capacity16).ID)
			}
			slices.SortFunc(want, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
			var got []uuid.UUID
			pages := 0
			after := uuid.NullUUID{}
			for range 100 {
				ss, err := d.SledsAfter(ctx, after, limit+1)
				require.NoError(t, err)
				pages++
				more := len(ss) > limit
				if more {
					ss = ss[:limit]
				}
				for _, s := range ss {
					got = append(got, s.ID)
				}
				if !more {
					break
				}
				after = uuid.NullUUID{UUID: ss[len(ss)-1].ID, Valid: true}
			}
			require.Equal(t, want, append([]uuid.UUID{}, got...))
			require.Equal(t, max(1, (n+limit-1)/limit), pages)
			// The string form sorts as the ids do: the API's order by id.
			strs := make([]string, 0, len(got))
			for _, id := range got {
				strs = append(strs, id.String())
			}
			require.True(t, slices.IsSorted(strs))
		})
	}
}
