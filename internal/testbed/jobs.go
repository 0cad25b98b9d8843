package testbed

import (
	"strconv"

	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/simcloud"
)

// The realistic job's parameters.
const (
	// ClientCertSecTag is where the realistic job's client certificate goes: the security tag
	// nRF Cloud uses when a request names none (0x01010001).
	ClientCertSecTag = simcloud.DefaultSecTag
	// JobIntervalSeconds is the interval the realistic job's config command sets.
	JobIntervalSeconds = 3600
	// IntervalKey is the store key of the interval under the default store.prefix.
	IntervalKey = "provisioning/interval-sec"
	// CursorKey is the store key of the cursor under the default store.prefix.
	CursorKey = "provisioning/after-correlation-id"
)

// ClientCertificate is the owner request for a client certificate in tag: the service has the
// modem generate a key (%KEYGEN), signs the CSR it returns and writes the certificate
// (%CMNG), deleting the tag's old key and certificate first.
func ClientCertificate(tag uint32) simcloud.Request {
	return simcloud.Request{ClientCertificate: &simcloud.ClientCertificateRequest{SecTag: tag}}
}

// Interval is the owner request that sets provisioning/interval-sec by a config command.
func Interval(seconds int) simcloud.Request {
	return Config(IntervalKey, strconv.Itoa(seconds))
}

// Config is an owner config request writing key=value pairs, in order (key, value, key, …).
func Config(kv ...string) simcloud.Request {
	props := make(simcloud.Properties, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		props = append(props, proto.Property{Key: kv[i], Value: kv[i+1]})
	}
	return simcloud.Request{Config: &simcloud.ConfigRequest{Properties: props}}
}

// Finished is the owner request that ends the provisioning configuration.
func Finished() simcloud.Request {
	return simcloud.Request{Finished: &simcloud.FinishedRequest{}}
}

// AT is an owner request for one raw AT command, e.g. AT("%CMNG=3,42,0", 513).
func AT(command string, ignoreCME ...uint64) simcloud.Request {
	return simcloud.Request{ATRequest: &simcloud.ATRequest{Command: command, IgnoreCMEErrors: ignoreCME}}
}

// RealisticJob is the demo's job: a client certificate in ClientCertSecTag, an interval change
// to JobIntervalSeconds by config command, and FINISHED.
func RealisticJob() []simcloud.Request {
	return []simcloud.Request{ClientCertificate(ClientCertSecTag), Interval(JobIntervalSeconds), Finished()}
}

// QueueRealisticJob queues RealisticJob for the device.
func (b *Bed) QueueRealisticJob() ([]simcloud.Job, error) { return b.Queue(RealisticJob()...) }
