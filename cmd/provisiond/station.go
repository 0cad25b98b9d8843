package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/provisiond/provisiond/internal/config"
	"github.com/provisiond/provisiond/internal/control"
	"github.com/provisiond/provisiond/internal/ownerapi"
	"github.com/provisiond/provisiond/internal/station"
)

// The daemon answers /v1/imei through its embedded *daemon.Daemon.
var _ control.IMEIBackend = controlBackend{}

// Exit codes of the station subcommands: 1 when some device or instance failed, 2 when no
// instance could be reached at all.
const exitNoneReached = 2

// stationFlags are the flags of the subcommands that work on every instance of the host.
type stationFlags struct {
	runDir   string
	instance string
	timeout  time.Duration
}

func (f *stationFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.runDir, "run-dir", station.DefaultRunDir,
		"folder of the control sockets: DIR/provisiond.sock and DIR/<instance>/provisiond.sock")
	cmd.Flags().StringVar(&f.instance, "instance", "", "only this instance (its subfolder's name; provisiond for DIR/provisiond.sock)")
	cmd.Flags().DurationVar(&f.timeout, "timeout", station.QueryTimeout, "how long each instance has to answer")
}

// readDevices reads the identity of the modem of every selected instance, all at once.
func (f *stationFlags) readDevices(ctx context.Context) ([]station.Result[station.Device], error) {
	if f.timeout <= 0 {
		return nil, fmt.Errorf("--timeout %v: want a positive duration", f.timeout)
	}
	all, err := station.Discover(f.runDir)
	if err != nil {
		return nil, &exitError{code: exitNoneReached, err: err}
	}
	insts, err := station.Select(all, f.instance)
	if err != nil {
		return nil, err
	}
	return station.Query(ctx, insts, f.timeout, func(ctx context.Context, in station.Instance) (station.Device, error) {
		return station.ReadDevice(ctx, in.Name, control.Dial(in.Socket), time.Now)
	}), nil
}

// devicesOf splits results into the devices read and the number of instances that gave none;
// it fails with exitNoneReached when none gave one.
func devicesOf(results []station.Result[station.Device]) (devs []station.Device, failed int, err error) {
	for _, r := range results {
		if r.Err != nil {
			failed++
			continue
		}
		devs = append(devs, r.Value)
	}
	if len(devs) == 0 {
		return nil, failed, &exitError{code: exitNoneReached, err: fmt.Errorf("no instance gave a device (%d asked)", len(results))}
	}
	return devs, failed, nil
}

func newTokensCmd() *cobra.Command {
	var f stationFlags
	var asCSV bool
	cmd := &cobra.Command{
		Use:   "tokens",
		Short: "Print the attestation token of every attached modem",
		Long: "Ask every provisiond instance of the host at once for its modem's attestation token and\n" +
			"IMEI. --csv writes the rows Nordic's gather_attestation_tokens writes and claim_devices\n" +
			"reads (imei,uuid,token,<UTC ISO-8601 time>, no header); instances that give no token\n" +
			"are reported on stderr. Exits 1 when some instance gave no token, 2 when none did.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			results, err := f.readDevices(cmd.Context())
			if err != nil {
				return err
			}
			if !asCSV {
				if err := station.WriteTable(cmd.OutOrStdout(), results, f.timeout); err != nil {
					return err
				}
				_, failed, err := devicesOf(results)
				if err == nil && failed > 0 {
					err = &exitError{code: 1, err: fmt.Errorf("%d of %d instance(s) gave no token", failed, len(results))}
				}
				return err
			}
			for _, r := range results {
				if r.Err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "provisiond: %s: %s\n", r.Instance.Name, station.Describe(r.Err, f.timeout))
				}
			}
			devs, failed, err := devicesOf(results)
			if err != nil {
				return err
			}
			if err := station.WriteCSV(cmd.OutOrStdout(), devs); err != nil {
				return err
			}
			if failed > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%d of %d instance(s) gave no token", failed, len(results))}
			}
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&asCSV, "csv", false, "write CSV rows for Nordic's claim_devices")
	return cmd
}

func newClaimCmd() *cobra.Command {
	var f stationFlags
	var configPath, keyFile string
	var tags []string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "claim --api-key-file FILE",
		Short: "Claim every attached device in nRF Cloud in one bulk call",
		Long: "Read the attestation token of every instance's modem and claim the devices through the\n" +
			"owner API (owner.api_url) in one bulk call, with --tags if given (nrf-cloud-onboarding\n" +
			"starts nRF Cloud's auto-onboarding rule). Each device is reported as claimed, already\n" +
			"claimed or failed with the service's reason. --dry-run only asks, device by device,\n" +
			"whether the service would claim it. The API key is read from FILE, never from the\n" +
			"command line. Exits 1 when any device failed, 2 when no instance could be reached.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			api, err := ownerClient(configPath, cmd.Flags().Changed("config"), keyFile)
			if err != nil {
				return err
			}
			results, err := f.readDevices(ctx)
			if err != nil {
				return err
			}
			devs, _, err := devicesOf(results)
			if err != nil {
				return err
			}
			var reports []station.ClaimReport
			if dryRun {
				reports = station.DryRun(ctx, api, devs)
			} else {
				reports = station.Claim(ctx, api, devs, cleanTags(tags))
			}
			reports = append(reports, station.Unread(results, f.timeout)...)
			failed, err := station.WriteReport(cmd.OutOrStdout(), reports)
			if err != nil {
				return err
			}
			if failed > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%d of %d device(s) failed", failed, len(reports))}
			}
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&configPath, "config", config.DefaultPath, "config file that names owner.api_url and owner.ca_file")
	cmd.Flags().StringVar(&keyFile, "api-key-file", "", "file holding the nRF Cloud API key (required)")
	cmd.Flags().StringSliceVar(&tags, "tags", nil, "provisioning tags to claim the devices with, comma-separated")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only ask whether each device could be claimed")
	_ = cmd.MarkFlagRequired("api-key-file")
	return cmd
}

func cleanTags(in []string) []string {
	var out []string
	for _, t := range in {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// ownerClient reads the API key from keyFile and the API's URL and roots from the config.
// No error it returns holds the key.
func ownerClient(configPath string, explicit bool, keyFile string) (*ownerapi.Client, error) {
	key, err := readAPIKey(keyFile)
	if err != nil {
		return nil, err
	}
	cfg, err := config.Load(configPath, explicit)
	if err != nil {
		return nil, err
	}
	var roots *x509.CertPool
	if cfg.Owner.CAFile != "" {
		pem, err := os.ReadFile(cfg.Owner.CAFile)
		if err != nil {
			return nil, fmt.Errorf("owner.ca_file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("owner.ca_file %s: no PEM certificate in it", cfg.Owner.CAFile)
		}
	}
	return ownerapi.New(cfg.Owner.APIURL, key, "provisiond/"+version, roots)
}

// readAPIKey reads the key: the file's content without surrounding white space. Errors
// describe the file, never its content.
func readAPIKey(path string) (string, error) {
	if path == "" {
		return "", errors.New("--api-key-file: empty path")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--api-key-file: %w", err)
	}
	key := strings.TrimSpace(string(data))
	switch {
	case key == "":
		return "", fmt.Errorf("--api-key-file %s: the file is empty", path)
	case strings.ContainsAny(key, " \t\r\n"):
		return "", fmt.Errorf("--api-key-file %s: want the key alone, found white space inside it", path)
	}
	return key, nil
}
