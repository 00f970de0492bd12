use super::proto::{Metric, Payload, Value, datatype};
use super::*;

const T0: i64 = 1_700_000_000_000;

fn decoder() -> Sparkplug {
    Sparkplug::new(SparkplugConfig {
        mapping: MetricMapping::parse("Motor/Amps=current").expect("test input is valid"),
        device_id: DeviceIdTemplate::parse("{node}:{device}").expect("test input is valid"),
        max_tracked: 3,
    })
}

fn metric(name: Option<&str>, alias: Option<u64>, value: f64) -> Metric {
    Metric {
        name: name.map(String::from),
        alias,
        datatype: name.map(|_| datatype::DOUBLE),
        value: Some(Value::DoubleValue(value)),
        ..Metric::default()
    }
}

fn payload(seq: u64, metrics: Vec<Metric>) -> Vec<u8> {
    Payload {
        timestamp: Some(T0 as u64),
        seq: Some(seq),
        metrics,
        ..Payload::default()
    }
    .encode_to_vec()
}

fn bd_seq(n: i64) -> Metric {
    Metric {
        name: Some("bdSeq".into()),
        datatype: Some(datatype::INT64),
        value: Some(Value::LongValue(n as u64)),
        ..Metric::default()
    }
}

fn readings(d: &Decoded) -> Vec<(String, serde_json::Value)> {
    d.outputs
        .iter()
        .filter_map(|o| match o {
            Output::Reading { device_id, payload } => Some((
                device_id.clone(),
                serde_json::from_slice(payload).expect("test input is valid"),
            )),
            _ => None,
        })
        .collect()
}

fn reason(d: &Decoded) -> Option<InvalidReason> {
    d.outputs.iter().find_map(|o| match o {
        Output::DeadLetter(i) => Some(i.reason),
        _ => None,
    })
}

/// NBIRTH then DBIRTH for edge1/plc1 with temperature (alias 1) and Motor/Amps (alias 2).
fn born() -> Sparkplug {
    let mut s = decoder();
    let nbirth = payload(
        0,
        vec![
            bd_seq(7),
            metric(Some("Node Control/Rebirth"), Some(0), 0.0),
        ],
    );
    assert_eq!(
        s.decode("spBv1.0/plant/NBIRTH/edge1", &nbirth, T0),
        Decoded::default()
    );
    let dbirth = payload(
        1,
        vec![
            metric(Some("Sensors/Temperature"), Some(1), 21.5),
            metric(Some("Motor/Amps"), Some(2), 2.0),
        ],
    );
    let d = s.decode("spBv1.0/plant/DBIRTH/edge1/plc1", &dbirth, T0);
    assert_eq!(readings(&d).len(), 1, "{d:?}");
    s
}

#[test]
fn births_and_data_become_readings_of_the_mapped_fields() {
    let mut s = born();
    let d = s.decode(
        "spBv1.0/plant/DDATA/edge1/plc1",
        &payload(2, vec![metric(None, Some(1), 85.25)]),
        T0,
    );
    let r = readings(&d);
    assert_eq!(r.len(), 1);
    let (id, reading) = &r[0];
    assert_eq!(id, "edge1:plc1");
    assert_eq!(reading["device_id"], "edge1:plc1");
    assert_eq!(reading["seq"], 2);
    assert_eq!(reading["timestamp"], T0);
    assert_eq!(reading["sensors"]["temperature"]["value"], 85.25);
    assert_eq!(reading["sensors"]["current"]["value"], 2.0);
    assert_eq!(reading["location"]["building"], "plant");
    // Valid for the processor as it stands.
    iiot_model::decode(
        &serde_json::to_vec(reading).expect("test input is valid"),
        T0,
        &Default::default(),
    )
    .expect("test input is valid");
    assert_eq!(d.seq_gaps, 0);
    assert!(d.command.is_none());
}

#[test]
fn data_before_birth_is_dead_lettered_and_asks_for_a_rebirth_at_most_every_5s() {
    let mut s = decoder();
    let data = payload(5, vec![metric(None, Some(1), 20.0)]);
    let d = s.decode("spBv1.0/plant/DDATA/edge1/plc1", &data, T0);
    assert_eq!(reason(&d), Some(InvalidReason::SparkplugBeforeBirth));
    let command = d.command.expect("a rebirth request");
    assert_eq!(command.topic, "spBv1.0/plant/NCMD/edge1");
    let sent = Payload::decode(&command.payload[..]).expect("test input is valid");
    assert_eq!(
        sent.metrics[0].name.as_deref(),
        Some("Node Control/Rebirth")
    );
    assert_eq!(sent.metrics[0].value, Some(Value::BooleanValue(true)));
    let again = s.decode("spBv1.0/plant/DDATA/edge1/plc1", &data, T0 + 1_000);
    assert_eq!(reason(&again), Some(InvalidReason::SparkplugBeforeBirth));
    assert!(again.command.is_none());
    let later = s.decode(
        "spBv1.0/plant/DDATA/edge1/plc1",
        &data,
        T0 + REBIRTH_EVERY_MS,
    );
    assert!(later.command.is_some());
}

#[test]
fn an_unknown_alias_is_dead_lettered_and_changes_nothing() {
    let mut s = born();
    let d = s.decode(
        "spBv1.0/plant/DDATA/edge1/plc1",
        &payload(
            2,
            vec![metric(None, Some(1), 99.0), metric(None, Some(9), 1.0)],
        ),
        T0,
    );
    assert_eq!(reason(&d), Some(InvalidReason::SparkplugUnknownAlias));
    assert!(d.command.is_some());
    let d = s.decode(
        "spBv1.0/plant/DDATA/edge1/plc1",
        &payload(3, vec![metric(None, Some(2), 3.0)]),
        T0,
    );
    assert_eq!(readings(&d)[0].1["sensors"]["temperature"]["value"], 21.5);
}

#[test]
fn seq_gaps_are_counted_across_the_wrap() {
    let mut s = born();
    let data = |seq| payload(seq, vec![metric(None, Some(1), 20.0)]);
    assert_eq!(
        s.decode("spBv1.0/plant/DDATA/edge1/plc1", &data(2), T0)
            .seq_gaps,
        0
    );
    assert_eq!(
        s.decode("spBv1.0/plant/DDATA/edge1/plc1", &data(5), T0)
            .seq_gaps,
        2
    );
    assert_eq!(
        s.decode("spBv1.0/plant/DDATA/edge1/plc1", &data(255), T0)
            .seq_gaps,
        249
    );
    assert_eq!(
        s.decode("spBv1.0/plant/DDATA/edge1/plc1", &data(1), T0)
            .seq_gaps,
        1
    );
}

#[test]
fn deaths_send_offline_notices_and_a_stale_will_is_ignored() {
    let mut s = born();
    let ddeath = s.decode("spBv1.0/plant/DDEATH/edge1/plc1", &payload(2, vec![]), T0);
    let Output::Offline {
        device_id,
        payload: notice,
    } = &ddeath.outputs[0]
    else {
        panic!("{ddeath:?}");
    };
    assert_eq!(device_id, "edge1:plc1");
    let notice = OfflineNotice::parse(notice).expect("test input is valid");
    assert_eq!(notice.cause, "DDEATH");
    let d = s.decode(
        "spBv1.0/plant/DDATA/edge1/plc1",
        &payload(3, vec![metric(None, Some(1), 20.0)]),
        T0,
    );
    assert_eq!(reason(&d), Some(InvalidReason::SparkplugBeforeBirth));

    let stale = Payload {
        metrics: vec![bd_seq(6)],
        ..Payload::default()
    }
    .encode_to_vec();
    assert!(
        s.decode("spBv1.0/plant/NDEATH/edge1", &stale, T0)
            .outputs
            .is_empty()
    );
    let ndeath = Payload {
        metrics: vec![bd_seq(8)],
        ..Payload::default()
    }
    .encode_to_vec();
    let d = s.decode("spBv1.0/plant/NDEATH/edge1", &ndeath, T0);
    assert_eq!(d.outputs.len(), 2, "the node and its device: {d:?}");
}

#[test]
fn bad_topics_and_payloads_and_too_many_devices_are_dead_lettered() {
    let mut s = born();
    let bad = |d: Decoded| reason(&d);
    assert_eq!(
        bad(s.decode("spBv1.0/plant/DDATA/edge1", &payload(1, vec![]), T0)),
        Some(InvalidReason::SparkplugMalformed)
    );
    assert_eq!(
        bad(s.decode("spBv1.0/plant/DDATA/edge1/plc1", b"\xff\xff\xff", T0)),
        Some(InvalidReason::SparkplugMalformed)
    );
    assert!(
        s.decode("spBv1.0/plant/NCMD/edge1", b"", T0)
            .outputs
            .is_empty(),
        "commands are not ours to judge"
    );
    // edge1 and plc1 are tracked; one more fits, the next does not.
    let dbirth = |n| payload(n, vec![metric(Some("temperature"), Some(1), 20.0)]);
    assert!(reason(&s.decode("spBv1.0/plant/DBIRTH/edge1/plc2", &dbirth(2), T0)).is_none());
    assert_eq!(
        bad(s.decode("spBv1.0/plant/DBIRTH/edge1/plc3", &dbirth(3), T0)),
        Some(InvalidReason::SparkplugLimit)
    );
    assert_eq!(s.tracked(), 3);
}

#[test]
fn a_nodes_own_metrics_are_a_device_named_after_the_node() {
    let mut s = decoder();
    let nbirth = payload(
        0,
        vec![bd_seq(1), metric(Some("Boiler Pressure"), Some(3), 1000.0)],
    );
    let d = s.decode("spBv1.0/plant/NBIRTH/edge2", &nbirth, T0);
    assert_eq!(readings(&d)[0].0, "edge2:edge2");
    let d = s.decode(
        "spBv1.0/plant/NDATA/edge2",
        &payload(1, vec![metric(None, Some(3), 1001.5)]),
        T0,
    );
    let r = readings(&d);
    assert_eq!(r[0].1["sensors"]["pressure"]["value"], 1001.5);
    assert_eq!(r[0].1["seq"], 2);
    // A DATA that changes no mapped value makes no reading.
    let d = s.decode(
        "spBv1.0/plant/NDATA/edge2",
        &payload(2, vec![metric(Some("Uptime"), None, 5.0)]),
        T0,
    );
    assert!(d.outputs.is_empty(), "{d:?}");
}

#[test]
fn births_deaths_rebirths_and_tracked_devices_are_counted() {
    let mut s = born();
    let unknown = payload(2, vec![metric(None, Some(9), 1.0)]);
    s.decode("spBv1.0/plant/DDATA/edge1/plc1", &unknown, T0);
    // Within 5 s of the first request: dead-lettered, no second request.
    s.decode("spBv1.0/plant/DDATA/edge1/plc1", &unknown, T0 + 1);
    s.decode("spBv1.0/plant/DDEATH/edge1/plc1", &payload(3, vec![]), T0);
    let stale = Payload {
        metrics: vec![bd_seq(6)],
        ..Payload::default()
    };
    s.decode("spBv1.0/plant/NDEATH/edge1", &stale.encode_to_vec(), T0);
    assert_eq!(
        s.counts(),
        SparkplugCounts {
            node_births: 1,
            device_births: 1,
            node_deaths: 0,
            device_deaths: 1,
            rebirths_requested: 1,
            nodes_tracked: 1,
            devices_tracked: 1,
        }
    );
    let ndeath = Payload {
        metrics: vec![bd_seq(7)],
        ..Payload::default()
    };
    s.decode("spBv1.0/plant/NDEATH/edge1", &ndeath.encode_to_vec(), T0);
    assert_eq!(s.counts().node_deaths, 1);
}
