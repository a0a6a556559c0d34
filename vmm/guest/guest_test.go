package guest

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// wantImages is every guest image ABI.md describes.
var wantImages = []string{"crash", "disk", "memcheck", "panic", "smbios", "ticker"}

func TestNames(t *testing.T) {
	require.Equal(t, wantImages, Names())
}

func TestImageUnknown(t *testing.T) {
	for _, name := range []string{"nope", "", "../guest", "ticker.bin"} {
		_, err := Image(name)
		require.Error(t, err, name)
		require.Contains(t, err.Error(), "guest image \""+name+"\"")
		require.Contains(t, err.Error(), "disk, memcheck, panic, smbios, ticker")
	}
}

func TestImageIsACopy(t *testing.T) {
	a, err := Image("ticker")
	require.NoError(t, err)
	a[0] ^= 0xff
	b, err := Image("ticker")
	require.NoError(t, err)
	require.NotEqual(t, a[0], b[0], "Image must return a copy callers may modify")
}

// TestImagesMultiboot checks that every embedded image has the header layout
// ABI.md promises: a.out kludge + memory info, loaded at 1 MiB from file
// offset 0, the whole file loaded, entry inside, a zero-filled area after it.
func TestImagesMultiboot(t *testing.T) {
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			img, err := Image(name)
			require.NoError(t, err)
			h, err := ParseMultiboot(img)
			require.NoError(t, err)
			require.Equal(t, uint32(MultibootFlagAOut|MultibootFlagMemInfo), h.Flags)
			require.Equal(t, 0, h.HeaderOffset)
			require.Equal(t, uint32(0x100000), h.LoadAddr)
			require.Equal(t, h.LoadAddr, h.HeaderAddr)
			require.Equal(t, 0, h.LoadOffset)
			require.Equal(t, len(img), h.LoadSize, "the whole file is loaded")
			require.Equal(t, uint64(h.LoadEndAddr), h.LoadEnd())
			require.Greater(t, h.BSSEnd(), h.LoadEnd(), "stacks live in the zero-filled area")
			require.Less(t, h.BSSEnd(), uint64(0x200000), "the image stays below 2 MiB (memcheck may use RAM from 2 MiB)")
			require.GreaterOrEqual(t, h.EntryAddr, h.LoadAddr)
			require.Less(t, uint64(h.EntryAddr), h.LoadEnd())
		})
	}
}

// TestImagesFresh rebuilds the images with build.sh and compares them with the
// embedded ones, byte for byte (the same check as `make check`).
func TestImagesFresh(t *testing.T) {
	for _, tool := range []string{"as", "ld", "objcopy", "sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("cannot rebuild guest images: %s not on PATH", tool)
		}
	}
	out := t.TempDir()
	cmd := exec.Command("sh", "./build.sh", out)
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "build.sh: %s", b)
	for _, name := range Names() {
		built, err := os.ReadFile(filepath.Join(out, name+".bin"))
		require.NoError(t, err)
		img, err := Image(name)
		require.NoError(t, err)
		require.True(t, bytes.Equal(built, img), "%s.bin is stale: run `make guests`", name)
	}
	entries, err := os.ReadDir(out)
	require.NoError(t, err)
	require.Len(t, entries, len(Names()), "build.sh built images that are not committed")
}

// header builds a Multiboot header with the given fields at offset off of a
// file of size n, with a correct checksum.
func header(n, off int, flags uint32, fields ...uint32) []byte {
	img := make([]byte, n)
	put := func(i int, v uint32) {
		if off+4*i+4 <= n {
			binary.LittleEndian.PutUint32(img[off+4*i:], v)
		}
	}
	put(0, MultibootMagic)
	put(1, flags)
	put(2, -(MultibootMagic + flags))
	for i, v := range fields {
		put(3+i, v)
	}
	return img
}

const goodFlags = MultibootFlagAOut | MultibootFlagMemInfo

func TestParseMultiboot(t *testing.T) {
	badSum := header(64, 0, goodFlags, 0x100000, 0x100000, 0, 0, 0x100020)
	badSum[8] ^= 1
	tests := []struct {
		name    string
		img     []byte
		wantErr string
		check   func(t *testing.T, h MultibootHeader)
	}{
		{name: "empty", img: nil, wantErr: "multiboot header not found in the first 8192 bytes"},
		{name: "no magic", img: make([]byte, 9000), wantErr: "not found"},
		{name: "magic beyond 8 KiB", img: header(9000, 8192, goodFlags), wantErr: "not found"},
		{name: "bad checksum", img: badSum, wantErr: "bad checksum"},
		{name: "no a.out bit", img: header(64, 0, MultibootFlagMemInfo), wantErr: "lack bit 16"},
		{name: "video required", img: header(64, 0, goodFlags|MultibootFlagVideo), wantErr: "unsupported required flags 0x4"},
		{name: "truncated", img: header(20, 0, goodFlags), wantErr: "truncated"},
		{name: "load above header", img: header(64, 0, goodFlags, 0x100000, 0x100004, 0, 0, 0x100010), wantErr: "above header_addr"},
		{name: "load before file", img: header(64, 0, goodFlags, 0x100010, 0x100000, 0, 0, 0x100020), wantErr: "before the file start"},
		{name: "load_end not above load", img: header(64, 0, goodFlags, 0x100000, 0x100000, 0x100000, 0, 0x100000), wantErr: "not above load_addr"},
		{name: "load_end beyond file", img: header(64, 0, goodFlags, 0x100000, 0x100000, 0x100041, 0, 0x100020), wantErr: "beyond the file"},
		{name: "header not loaded", img: header(64, 0, goodFlags, 0x100000, 0x100000, 0x100010, 0, 0x100004), wantErr: "header itself"},
		{name: "beyond 4 GiB", img: header(64, 0, goodFlags, 0xfffffff0, 0xfffffff0, 0, 0, 0xfffffff0), wantErr: "beyond 4 GiB"},
		{name: "bss below load end", img: header(64, 0, goodFlags, 0x100000, 0x100000, 0x100040, 0x100030, 0x100020), wantErr: "bss_end_addr"},
		{name: "entry below", img: header(64, 0, goodFlags, 0x100000, 0x100000, 0, 0, 0xfffff), wantErr: "entry_addr 0xfffff is outside"},
		{name: "entry at end", img: header(64, 0, goodFlags, 0x100000, 0x100000, 0x100040, 0x200000, 0x100040), wantErr: "outside the loaded range"},
		{
			name: "whole file, no bss",
			img:  header(64, 0, goodFlags, 0x100000, 0x100000, 0, 0, 0x100020),
			check: func(t *testing.T, h MultibootHeader) {
				require.Equal(t, 64, h.LoadSize)
				require.Equal(t, uint64(0x100040), h.LoadEnd())
				require.Equal(t, uint64(0x100040), h.BSSEnd())
			},
		},
		{
			name: "header after a prefix that is not loaded",
			img:  header(256, 64, goodFlags, 0x200010, 0x200000, 0x200080, 0x300000, 0x200040),
			check: func(t *testing.T, h MultibootHeader) {
				require.Equal(t, 64, h.HeaderOffset)
				require.Equal(t, 48, h.LoadOffset)
				require.Equal(t, 0x80, h.LoadSize)
				require.Equal(t, uint64(0x300000), h.BSSEnd())
			},
		},
		{
			name: "first valid header wins over a bad-checksum magic",
			img: func() []byte {
				img := header(128, 32, goodFlags, 0x100020, 0x100000, 0, 0, 0x100040)
				binary.LittleEndian.PutUint32(img[0:], MultibootMagic)
				return img
			}(),
			check: func(t *testing.T, h MultibootHeader) { require.Equal(t, 32, h.HeaderOffset) },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseMultiboot(tc.img)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			tc.check(t, h)
		})
	}
}

func FuzzParseMultiboot(f *testing.F) {
	for _, name := range Names() {
		img, err := Image(name)
		require.NoError(f, err)
		f.Add(img)
		f.Add(img[:64])
	}
	f.Add([]byte{})
	f.Add(header(64, 0, goodFlags, 0x100000, 0x100000, 0, 0, 0x100020))
	f.Add(header(64, 0, goodFlags, 0x100000, 0x100000, 0x100041, 0, 0x100020))
	f.Add(header(256, 64, goodFlags, 0x200010, 0x200000, 0x200080, 0x300000, 0x200040))
	f.Add(header(64, 0, goodFlags, 0xfffffff0, 0xfffffff0, 0, 0, 0xfffffff0))
	f.Fuzz(func(t *testing.T, img []byte) {
		h, err := ParseMultiboot(img)
		if err != nil {
			return
		}
		// Whatever is accepted must be safe to load as documented.
		require.GreaterOrEqual(t, h.LoadOffset, 0)
		require.LessOrEqual(t, h.LoadOffset+h.LoadSize, len(img))
		require.Positive(t, h.LoadSize)
		require.LessOrEqual(t, h.LoadEnd(), uint64(1)<<32)
		require.GreaterOrEqual(t, h.BSSEnd(), h.LoadEnd())
		require.GreaterOrEqual(t, uint64(h.EntryAddr), uint64(h.LoadAddr))
		require.Less(t, uint64(h.EntryAddr), h.LoadEnd())
		require.NotZero(t, h.Flags&MultibootFlagAOut)
	})
}
