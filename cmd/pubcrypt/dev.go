package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
	"github.com/pubcrypt/pubcrypt/keyring"
)

func runDev(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("dev", "Starts the embedded default as a service for the other commands: a real HashiCorp Vault\n"+
		"dev server on 127.0.0.1 with the demo's transit keys, and a Kafka-protocol broker with\n"+
		"the demo's topics. Prints the variables to export (and writes them to --env-file), then\n"+
		"runs until interrupted. Everything is in memory and gone when it stops.\n\n"+
		"Example: pubcrypt dev --env-file /tmp/pubcrypt.env & sleep 2; . /tmp/pubcrypt.env\n"+
		"         pubcrypt produce --count 5")
	envFile := fs.String("env-file", "", "also write the export lines to this file")
	port := countFlag(fs, new(int), "kafka-port", 0, "Kafka port (0: a free one)")
	maxMsg := countFlag(fs, new(int), "kafka-max-message-bytes", 0, "broker message.max.bytes (0: Kafka's default, 1048588)")
	vaultBin := fs.String("vault-bin", "", "path of the vault binary (default: found automatically)")
	fpePlugin := fs.String("fpe-plugin", os.Getenv("PUBCRYPT_FPE_PLUGIN_BIN"), "path of pubcrypt's Vault FPE plugin (scripts/install-fpe-plugin.sh): load it, enabled at "+keyring.DefaultFPEMount+" with the key "+demoFPEKey+", for --fields 'card_number=fpe(bin,luhn,vault)' (default $PUBCRYPT_FPE_PLUGIN_BIN; empty: not loaded)")
	var extra multiFlag
	fs.Var(&extra, "topic", "also create this Kafka topic, NAME or NAME:PARTITIONS (repeatable)")
	var of obsFlags
	of.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	specs, err := topicSpecs(extra)
	if err != nil {
		return err
	}
	if *port > 65535 {
		return usagef("--kafka-port must be a port number, 0 to 65535")
	}
	obs, err := of.start("dev")
	if err != nil {
		return err
	}
	defer obs.close()
	vopts := devvault.Options{Binary: *vaultBin, Keys: []string{demoKey}}
	if *fpePlugin != "" {
		vopts.FPEPluginMount, vopts.FPEPluginBin = keyring.DefaultFPEMount, *fpePlugin
	}
	vault, err := devvault.Start(ctx, vopts)
	if err != nil {
		return err
	}
	defer vault.Stop()
	if err := vault.CreateFieldKeys(ctx, demoDetKey, demoFPEKey); err != nil {
		return err
	}
	if *fpePlugin != "" {
		if err := vault.CreateFPEPluginKey(ctx, keyring.DefaultFPEMount, demoFPEKey); err != nil {
			return err
		}
	}
	kafka, err := devkafka.Start(devkafka.Options{Port: *port, MaxMessageBytes: *maxMsg,
		Topics: []string{topicPlain, topicEncrypted, topicLarge}})
	if err != nil {
		return err
	}
	defer kafka.Close()
	topics := []string{topicPlain, topicEncrypted, topicLarge}
	if len(specs) > 0 {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := broker.CreateKafkaTopics(cctx, broker.KafkaSettings{Brokers: kafka.Addrs}, specs)
		cancel()
		if err != nil {
			return err
		}
		for _, t := range specs {
			topics = append(topics, t.String())
		}
	}
	var lines []string
	for _, kv := range append(vault.Env(), "KAFKA_BROKERS="+kafka.Addrs[0]) {
		k, v, _ := strings.Cut(kv, "=")
		lines = append(lines, "export "+k+"="+strconv.Quote(v))
	}
	text := strings.Join(lines, "\n") + "\n"
	if *envFile != "" {
		if err := os.WriteFile(*envFile, []byte(text), 0o600); err != nil {
			return err
		}
	}
	fmt.Fprint(out, text)
	obs.started()
	plugin := ""
	if *fpePlugin != "" {
		plugin = fmt.Sprintf("; FPE plugin at %s with key %s", keyring.DefaultFPEMount, demoFPEKey)
	}
	fmt.Fprintf(out, "# Vault keys %s, %s, %s%s; topics %s. Ctrl-C stops everything.\n",
		demoKey, demoDetKey, demoFPEKey, plugin, strings.Join(topics, ", "))
	<-ctx.Done()
	return nil
}
