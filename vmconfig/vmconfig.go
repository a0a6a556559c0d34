// Package vmconfig reads the VM config files of the waggle CLI: a small TOML
// format, friendlier to write by hand than a spec, that converts into a
// spec.Spec. The format belongs to the CLI, not to any server API: servers
// only ever see specs.
//
// A config file:
//
//	name = "demo"                 # the instance's name (the CLI may override it)
//	description = "a ticking VM"
//
//	[board]
//	cpus = 1
//	memory_mb = 256
//	chipset = "i440fx"            # the default
//
//	[boot]
//	image = "ticker"              # a guest image the server ships
//	cmdline = "pace_ms=500"
//
//	[[serial]]
//	port = "com1"                 # becomes component "com1"
//
//	[[disk]]
//	name = "data"                 # device "data", backend "data-backend"
//	slot = 0                      # virtio-mmio slot
//	path = "vms/data.img"         # beneath the server's storage root
//	readonly = false
//	block_size = 512              # the default
//
// A disk's path names a file relative to the storage root of the server that
// runs the VM (its --storage-root), never an absolute host path: segments of
// letters, digits, '.', '_' and '-', none starting with '.', joined by '/'
// (see spec.CheckStoragePath).
//
// Unknown keys are errors, so a typo never silently changes a VM.
package vmconfig

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/wagglevm/waggle/spec"
)

// File is a config file as written.
type File struct {
	Name        string   `toml:"name"`
	Description string   `toml:"description"`
	Board       Board    `toml:"board"`
	Boot        Boot     `toml:"boot"`
	Serial      []Serial `toml:"serial"`
	Disk        []Disk   `toml:"disk"`
}

// Board is the [board] table.
type Board struct {
	CPUs      uint32 `toml:"cpus"`
	MemoryMiB uint64 `toml:"memory_mb"`
	Chipset   string `toml:"chipset"`
}

// Boot is the [boot] table.
type Boot struct {
	Image   string `toml:"image"`
	Cmdline string `toml:"cmdline"`
}

// Serial is one [[serial]] entry.
type Serial struct {
	Port string `toml:"port"`
}

// Disk is one [[disk]] entry: a virtio disk and its file backend.
type Disk struct {
	Name      string `toml:"name"`
	Slot      uint8  `toml:"slot"`
	Path      string `toml:"path"`
	ReadOnly  bool   `toml:"readonly"`
	BlockSize uint32 `toml:"block_size"`
}

// BackendSuffix is appended to a disk's name to name its backend component.
const BackendSuffix = "-backend"

// Parse decodes a config file strictly: unknown keys and wrong types are
// errors that say where.
func Parse(data []byte) (File, error) {
	var f File
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		var sm *toml.StrictMissingError
		if errors.As(err, &sm) {
			return File{}, fmt.Errorf("config: %s", strings.TrimSpace(sm.String()))
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return File{}, fmt.Errorf("config: line %d column %d: %v", row, col, de)
		}
		return File{}, fmt.Errorf("config: %w", err)
	}
	return f, nil
}

// Load reads and parses a config file.
func Load(path string) (File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return File{}, err
	}
	f, err := Parse(data)
	if err != nil {
		return File{}, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

var serialPorts = map[string]spec.SerialPortNumber{"com1": spec.COM1, "com2": spec.COM2, "com3": spec.COM3, "com4": spec.COM4}

// Spec converts the file into a validated spec. Defaults: chipset i440fx,
// image ticker, block_size 512.
func (f File) Spec() (spec.Spec, error) {
	var problems []string
	chipset := spec.ChipsetI440FX
	if f.Board.Chipset != "" && f.Board.Chipset != "i440fx" {
		problems = append(problems, fmt.Sprintf("board.chipset: unknown chipset %q; want i440fx", f.Board.Chipset))
	}
	image := f.Boot.Image
	if image == "" {
		image = "ticker"
	}
	b := spec.NewBuilder().
		SetBoard(spec.Board{CPUs: f.Board.CPUs, MemoryMiB: f.Board.MemoryMiB, Chipset: chipset}).
		SetBoot(spec.Boot{Image: image, Cmdline: f.Boot.Cmdline})
	for i, s := range f.Serial {
		num, ok := serialPorts[s.Port]
		if !ok {
			problems = append(problems, fmt.Sprintf("serial[%d].port: unknown port %q; want com1 to com4", i, s.Port))
			continue
		}
		b.Add(spec.MustKey(s.Port), spec.SerialPort{Num: num})
	}
	// reported holds spec paths already reported in the file's own terms.
	reported := map[string]bool{}
	for i, d := range f.Disk {
		dev, err1 := spec.ParseKey(d.Name)
		be, err2 := spec.ParseKey(d.Name + BackendSuffix)
		if err := errors.Join(err1, err2); err != nil {
			problems = append(problems, fmt.Sprintf("disk[%d].name: %v", i, err))
			continue
		}
		bs := d.BlockSize
		if bs == 0 {
			bs = 512
		}
		if err := spec.CheckStoragePath(d.Path); err != nil {
			problems = append(problems, fmt.Sprintf("disk[%d].path: %v", i, err))
			reported[spec.ComponentPath(be, "path")] = true
		}
		b.Add(dev, spec.VirtioDisk{Backend: be, Slot: d.Slot})
		b.Add(be, spec.FileStorageBackend{Path: d.Path, ReadOnly: d.ReadOnly, BlockSize: bs})
	}
	s, err := b.Build()
	if err != nil {
		var ve *spec.ValidationError
		if errors.As(err, &ve) {
			for _, p := range ve.Problems {
				if !reported[p.Path] {
					problems = append(problems, p.String())
				}
			}
		} else {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		return spec.Spec{}, fmt.Errorf("config: %s", strings.Join(problems, "; "))
	}
	return s, nil
}
