package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	api "waggle/gen/vmm-server/v1"
	specv1 "waggle/versions/vmm-server/v1"
	"waggle/vmconfig"
)

var errUsage = errors.New("usage")

const vmUsage = `usage: waggle vm <command> [flags]

commands:
  create   create the server's VM from a spec (-spec file.json) or a config (-config file.toml)
  get      show the VM's properties, state and generation
  spec     show the VM's spec
  run      start the VM
  stop     stop the VM (it is destroyed afterwards)
  reboot   restart the guest
  watch    print the VM's states as they change, until it ends
  serial   attach to the serial console (detach with Ctrl-])
  migrate  live-migrate the VM to another server (-to host:port), with progress and a summary

common flags:
  -server host:port   the VMM server (default $WAGGLE_SERVER or 127.0.0.1:12400)
  -o text|json        output for people (default) or for programs
`

// vmCmd holds what every `waggle vm` command shares.
type vmCmd struct {
	fs     *flag.FlagSet
	server *string
	output *string
	stdout io.Writer
	stderr io.Writer
}

func newVMCmd(name string, stdout, stderr io.Writer) *vmCmd {
	fs := flag.NewFlagSet("waggle vm "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := os.Getenv("WAGGLE_SERVER")
	if def == "" {
		def = DefaultListen
	}
	return &vmCmd{
		fs:     fs,
		server: fs.String("server", def, "the VMM server, host:port"),
		output: fs.String("o", "text", "output: text or json"),
		stdout: stdout, stderr: stderr,
	}
}

func (c *vmCmd) parse(args []string) error {
	if err := c.fs.Parse(args); err != nil {
		return errUsage
	}
	if *c.output != "text" && *c.output != "json" {
		fmt.Fprintln(c.stderr, "-o: want text or json")
		return errUsage
	}
	if c.fs.NArg() > 0 {
		fmt.Fprintf(c.stderr, "unexpected arguments: %v\n", c.fs.Args())
		return errUsage
	}
	return nil
}

// connect parses the command's flags and returns a client for the server.
func (c *vmCmd) connect(args []string) (*api.ClientWithResponses, error) {
	if err := c.parse(args); err != nil {
		return nil, err
	}
	return c.client()
}

func (c *vmCmd) client() (*api.ClientWithResponses, error) {
	return api.NewClientWithResponses("http://"+*c.server+"/v1", api.WithHTTPClient(&http.Client{Timeout: 90 * time.Second}))
}

func (c *vmCmd) json() bool { return *c.output == "json" }

func (c *vmCmd) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// apiErr turns a non-2xx answer into an error that shows the server's code
// and message.
func apiErr(status int, body []byte) error {
	var e api.Error
	if json.Unmarshal(body, &e) == nil && e.ErrorCode != "" {
		return fmt.Errorf("server answered %d %s: %s (request %s)", status, e.ErrorCode, e.Message, e.RequestId)
	}
	return fmt.Errorf("server answered %d: %s", status, strings.TrimSpace(string(body)))
}

func runVM(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, vmUsage)
		return errUsage
	}
	c := newVMCmd(args[0], stdout, stderr)
	rest := args[1:]
	switch args[0] {
	case "create":
		return c.create(ctx, rest)
	case "get":
		return c.get(ctx, rest)
	case "spec":
		return c.spec(ctx, rest)
	case "run", "stop", "reboot":
		return c.state(ctx, args[0], rest)
	case "watch":
		return c.watch(ctx, rest)
	case "serial":
		return c.serial(ctx, rest, stdin)
	case "migrate":
		return c.migrate(ctx, rest)
	case "-h", "help", "--help":
		fmt.Fprint(stdout, vmUsage)
		return nil
	}
	fmt.Fprintf(stderr, "waggle vm: unknown command %q\n%s", args[0], vmUsage)
	return errUsage
}

func (c *vmCmd) create(ctx context.Context, args []string) error {
	specPath := c.fs.String("spec", "", "a vmm-server v1 InstanceSpec as JSON")
	configPath := c.fs.String("config", "", "a VM config file (TOML)")
	name := c.fs.String("name", "", "the instance's name (default: the config's name, else \"vm\")")
	id := c.fs.String("id", "", "the instance's UUID (default: a new one)")
	if err := c.parse(args); err != nil {
		return err
	}
	if (*specPath == "") == (*configPath == "") {
		fmt.Fprintln(c.stderr, "give exactly one of -spec and -config")
		return errUsage
	}
	props := api.InstanceProperties{Name: "vm", Id: uuid.New()}
	var wire api.InstanceSpec
	if *configPath != "" {
		f, err := vmconfig.Load(*configPath)
		if err != nil {
			return err
		}
		s, err := f.Spec()
		if err != nil {
			return fmt.Errorf("%s: %w", *configPath, err)
		}
		if wire, err = specv1.FromSpec(s); err != nil {
			return err
		}
		if f.Name != "" {
			props.Name = f.Name
		}
		if f.Description != "" {
			props.Description = &f.Description
		}
	} else {
		data, err := os.ReadFile(*specPath)
		if err != nil {
			return err
		}
		if wire, err = specv1.DecodeInstanceSpec(data); err != nil {
			return fmt.Errorf("%s: %w", *specPath, err)
		}
	}
	if *name != "" {
		props.Name = *name
	}
	if *id != "" {
		u, err := uuid.Parse(*id)
		if err != nil {
			return fmt.Errorf("-id: %w", err)
		}
		props.Id = u
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	r, err := cl.InstanceEnsureWithResponse(ctx, api.InstanceEnsureRequest{Properties: props, Spec: &wire})
	if err != nil {
		return err
	}
	inst := r.JSON201
	if inst == nil {
		inst = r.JSON200
	}
	if inst == nil {
		return apiErr(r.StatusCode(), r.Body)
	}
	return c.printInstance(*inst)
}

func (c *vmCmd) printInstance(inst api.Instance) error {
	if c.json() {
		return c.printJSON(inst)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "name\t%s\n", inst.Properties.Name)
	fmt.Fprintf(tw, "id\t%s\n", inst.Properties.Id)
	fmt.Fprintf(tw, "state\t%s\n", inst.State)
	fmt.Fprintf(tw, "gen\t%d\n", inst.Gen)
	if inst.FailureReason != nil {
		fmt.Fprintf(tw, "failure\t%s\n", *inst.FailureReason)
	}
	return tw.Flush()
}

// getInstance fetches the server's instance.
func getInstance(ctx context.Context, cl *api.ClientWithResponses) (api.Instance, error) {
	r, err := cl.InstanceGetWithResponse(ctx)
	if err != nil {
		return api.Instance{}, err
	}
	if r.JSON200 == nil {
		return api.Instance{}, apiErr(r.StatusCode(), r.Body)
	}
	return *r.JSON200, nil
}

func (c *vmCmd) get(ctx context.Context, args []string) error {
	cl, err := c.connect(args)
	if err != nil {
		return err
	}
	inst, err := getInstance(ctx, cl)
	if err != nil {
		return err
	}
	return c.printInstance(inst)
}

func (c *vmCmd) spec(ctx context.Context, args []string) error {
	cl, err := c.connect(args)
	if err != nil {
		return err
	}
	r, err := cl.InstanceSpecGetWithResponse(ctx)
	if err != nil {
		return err
	}
	if r.JSON200 == nil {
		return apiErr(r.StatusCode(), r.Body)
	}
	if r.JSON200.Spec == nil && !c.json() {
		fmt.Fprintln(c.stdout, "the VM waits for its migration source to send its spec")
		return nil
	}
	if c.json() {
		return c.printJSON(r.JSON200)
	}
	return c.printJSON(r.JSON200.Spec)
}

func (c *vmCmd) state(ctx context.Context, verb string, args []string) error {
	wait := c.fs.Bool("wait", true, "wait until the VM reaches the state asked for (or fails)")
	cl, err := c.connect(args)
	if err != nil {
		return err
	}
	inst, err := getInstance(ctx, cl)
	if err != nil {
		return err
	}
	r, err := cl.InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequested(verb)})
	if err != nil {
		return err
	}
	if r.StatusCode() != http.StatusNoContent {
		return apiErr(r.StatusCode(), r.Body)
	}
	if !*wait {
		return nil
	}
	goal := map[string][]api.InstanceState{
		"run":    {api.InstanceStateRunning},
		"stop":   {api.InstanceStateDestroyed},
		"reboot": {api.InstanceStateRunning},
	}[verb]
	return c.follow(ctx, cl, inst.Gen, func(st api.InstanceStateView) bool {
		for _, s := range goal {
			if st.State == s {
				return true
			}
		}
		return false
	})
}

// follow prints each state change after gen until done says so, or the VM
// fails or is destroyed.
func (c *vmCmd) follow(ctx context.Context, cl *api.ClientWithResponses, gen int64, done func(api.InstanceStateView) bool) error {
	for {
		r, err := cl.InstanceStateMonitorWithResponse(ctx, &api.InstanceStateMonitorParams{Gen: gen})
		if err != nil {
			return err
		}
		if r.JSON200 == nil {
			return apiErr(r.StatusCode(), r.Body)
		}
		st := *r.JSON200
		if st.Gen == gen {
			continue // the long poll timed out
		}
		gen = st.Gen
		if c.json() {
			if err := json.NewEncoder(c.stdout).Encode(st); err != nil {
				return err
			}
		} else {
			line := fmt.Sprintf("%s  gen %d  %s", time.Now().Format("15:04:05.000"), st.Gen, st.State)
			if st.FailureReason != nil {
				line += ": " + *st.FailureReason
			}
			fmt.Fprintln(c.stdout, line)
		}
		switch {
		case done(st):
			return nil
		case st.State == api.InstanceStateFailed:
			return fmt.Errorf("the VM failed: %s", deref(st.FailureReason))
		case st.State == api.InstanceStateDestroyed:
			return nil
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func (c *vmCmd) watch(ctx context.Context, args []string) error {
	cl, err := c.connect(args)
	if err != nil {
		return err
	}
	inst, err := getInstance(ctx, cl)
	if err != nil {
		return err
	}
	if !c.json() {
		fmt.Fprintf(c.stdout, "%s  gen %d  %s\n", time.Now().Format("15:04:05.000"), inst.Gen, inst.State)
	}
	err = c.follow(ctx, cl, inst.Gen, func(api.InstanceStateView) bool { return false })
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
