//! The fleet: per-device state, value generation and serialization of SPEC §2 readings.
//!
//! Each device is a few hundred bytes with its own random stream, so 100,000 devices are cheap
//! and device `k` behaves the same whatever the fleet size. Simulated time of a device's `k`-th
//! step is `k × interval` (without the runner's `i × interval / N` spreading offset: that offset
//! is below one interval, and leaving it out keeps a device's values independent of the fleet
//! size); the wall-clock timestamp passed to [`Fleet::emit`] only goes into the message.

use std::borrow::Cow;
use std::f64::consts::TAU;
use std::fmt;
use std::time::Duration;

use iiot_model::{
    DeviceInfo, Location, Measurement, Reading, SensorStatus, Sensors, SwitchReading, SwitchState,
};
use rand::{Rng, SeedableRng as _};
use rand_distr::StandardNormal;
use rand_pcg::Pcg64Mcg;

use super::SimulatorConfig;
use super::faults::{Episode, FaultKind};
use super::malformed;

const BUILDINGS: [&str; 4] = ["A栋", "B栋", "C栋", "D栋"];
const MODELS: [&str; 3] = ["IOT-SENSOR-V2", "IOT-SENSOR-V3", "IOT-SENSOR-PRO"];
const FIRMWARES: [&str; 5] = ["1.2.3", "1.2.4", "1.3.0", "2.0.1", "2.1.0"];
const FLOORS: u16 = 6;
const ROOMS_PER_FLOOR: u16 = 20;

/// Units of the four measurements (SPEC §2).
const UNIT_TEMPERATURE: &str = "°C";
const UNIT_HUMIDITY: &str = "%";
const UNIT_PRESSURE: &str = "hPa";
const UNIT_CURRENT: &str = "A";

/// Mean reversion per step (fraction of the distance to the target closed each step).
const THETA_TEMPERATURE: f64 = 0.1;
const THETA_HUMIDITY: f64 = 0.1;
const THETA_PRESSURE: f64 = 0.05;
const THETA_CURRENT: f64 = 0.3;
/// Noise per step per unit of `variance`: variance 0.1 gives 0.25 °C, 0.5 %, 0.1 hPa, 0.05 A.
const SIGMA_TEMPERATURE: f64 = 2.5;
const SIGMA_HUMIDITY: f64 = 5.0;
const SIGMA_PRESSURE: f64 = 1.0;
const SIGMA_CURRENT_ON: f64 = 0.5;
const SIGMA_CURRENT_OFF: f64 = 0.02;
/// Standby current of a switched-off machine, in A.
const CURRENT_OFF: f64 = 0.05;
/// Amplitudes of the daily cycle: warmest (and driest) at 15:00 simulated time.
const DAILY_TEMPERATURE: f64 = 2.0;
const DAILY_HUMIDITY: f64 = 3.0;
/// Simulated time of day at step 0, in hours, and the hour of the daily peak.
const START_HOUR: f64 = 8.0;
const PEAK_HOUR: f64 = 15.0;
/// Expected switch flips per simulated hour.
const SWITCH_FLIPS_PER_HOUR: f64 = 3.0;
/// A device whose battery falls to this level is recharged to 100 %.
const BATTERY_RECHARGE_AT: f64 = 5.0;

/// What one call of [`Fleet::emit`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emitted {
    /// A valid reading with this `seq` is in the buffer.
    Reading {
        /// The reading's `seq` (1 for a device's first reading).
        seq: u64,
    },
    /// A deliberately malformed message is in the buffer; it consumed no `seq`.
    Malformed,
    /// The device sends nothing this step (silent fault, or an index outside the fleet); the
    /// buffer is empty.
    Silent,
}

/// Per-fleet constants derived once from the [`SimulatorConfig`].
#[derive(Debug, Clone)]
struct Params {
    interval: Duration,
    sigma_temperature: f64,
    sigma_humidity: f64,
    sigma_pressure: f64,
    sigma_current_on: f64,
    sigma_current_off: f64,
    /// Phase advance of the daily cycle per step, in radians.
    cycle_per_step: f64,
    /// Simulated hours per step.
    hours_per_step: f64,
    switch_flip_p: f64,
    fault_rate: f64,
    malformed_rate: f64,
}

impl Params {
    fn new(cfg: &SimulatorConfig) -> Params {
        let variance = if cfg.variance.is_finite() {
            cfg.variance.max(0.0)
        } else {
            0.0
        };
        let hours_per_step = cfg.interval.as_secs_f64() / 3600.0;
        Params {
            interval: cfg.interval,
            sigma_temperature: variance * SIGMA_TEMPERATURE,
            sigma_humidity: variance * SIGMA_HUMIDITY,
            sigma_pressure: variance * SIGMA_PRESSURE,
            sigma_current_on: variance * SIGMA_CURRENT_ON,
            sigma_current_off: variance * SIGMA_CURRENT_OFF,
            cycle_per_step: TAU * hours_per_step / 24.0,
            hours_per_step,
            switch_flip_p: probability(SWITCH_FLIPS_PER_HOUR * hours_per_step).min(0.5),
            fault_rate: probability(cfg.fault_rate),
            malformed_rate: probability(cfg.malformed_rate),
        }
    }
}

/// `p` clamped to `0..=1`, NaN as 0.
fn probability(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}

/// One simulated device. Kept small: 100,000 of them must fit in a few tens of MB.
#[derive(Debug, Clone)]
pub(super) struct Device {
    rng: Pcg64Mcg,
    /// `seq` of the last valid reading (0 before the first).
    seq: u64,
    /// Emissions so far (readings, malformed and silent alike).
    step: u64,
    temperature: f64,
    temperature_base: f64,
    humidity: f64,
    humidity_base: f64,
    pressure: f64,
    pressure_base: f64,
    current: f64,
    current_on: f64,
    battery: f64,
    drain_per_step: f64,
    episode: Option<Episode>,
    /// Injected faults not yet started: (kind, first step).
    injected: Vec<(FaultKind, u64)>,
    building: &'static str,
    model: &'static str,
    firmware: &'static str,
    room: u16,
    floor: u16,
    signal_base: i16,
    switch_on: bool,
}

/// The values of one emission, after faults.
#[derive(Debug, Clone, Copy)]
struct Observed {
    temperature: f64,
    humidity: f64,
    pressure: f64,
    current: f64,
    switch_on: bool,
    battery: i64,
    signal: i64,
    /// Stuck sensors keep saying `normal`: detecting them is the processor's job.
    temperature_stuck: bool,
}

/// A fleet of simulated devices, indexed from 0 (`device_001` is index 0).
pub struct Fleet {
    devices: Vec<Device>,
    ids: Vec<Box<str>>,
    /// Room labels, `floor * 100 + n`, indexed by [`Device::room`].
    rooms: Vec<Box<str>>,
    params: Params,
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("devices", &self.devices.len())
            .field("interval", &self.params.interval)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Builds `cfg.devices` devices with their baselines drawn from their own random streams.
    pub fn new(cfg: &SimulatorConfig) -> Fleet {
        let params = Params::new(cfg);
        let rooms = (1..=FLOORS)
            .flat_map(|floor| (1..=ROOMS_PER_FLOOR).map(move |n| floor * 100 + n))
            .map(|room| room.to_string().into_boxed_str())
            .collect();
        let n = cfg.devices as usize;
        let mut devices = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        for i in 0..cfg.devices {
            devices.push(Device::new(device_rng(cfg.seed, i), &params));
            ids.push(iiot_model::device_id(i + 1).into_boxed_str());
        }
        Fleet {
            devices,
            ids,
            rooms,
            params,
        }
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether the fleet has no devices.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The id of device `idx` (0-based: index 0 is `device_001`); empty outside the fleet.
    pub fn device_id(&self, idx: usize) -> &str {
        self.ids.get(idx).map_or("", |id| id)
    }

    /// Time between two readings of one device.
    pub fn interval(&self) -> Duration {
        self.params.interval
    }

    /// `seq` of device `idx`'s last valid reading (0 before its first, or outside the fleet).
    pub fn last_seq(&self, idx: usize) -> u64 {
        self.devices.get(idx).map_or(0, |d| d.seq)
    }

    /// Schedules a fault episode on device `idx` starting at its `at_step`-th emission (0-based
    /// count of [`Fleet::emit`] calls for that device). If another episode is running then, the
    /// injected one starts right after it; a step already past starts at the next emission.
    /// An index outside the fleet is ignored.
    pub fn inject(&mut self, idx: usize, fault: FaultKind, at_step: u64) {
        if let Some(d) = self.devices.get_mut(idx) {
            d.injected.push((fault, at_step));
        }
    }

    /// Produces device `idx`'s next message into `buf` (cleared first): the JSON of SPEC §2 with
    /// `timestamp_ms` as its event time, a malformed message, or nothing.
    pub fn emit(&mut self, idx: usize, timestamp_ms: i64, buf: &mut Vec<u8>) -> Emitted {
        buf.clear();
        let Some(dev) = self.devices.get_mut(idx) else {
            return Emitted::Silent;
        };
        let p = &self.params;
        let step = dev.step;
        dev.step += 1;
        dev.maybe_start_episode(step, p);
        dev.advance(step, p);
        let Some(obs) = dev.observe() else {
            return Emitted::Silent;
        };
        let id = self.ids.get(idx).map_or("", |id| id);
        let room = self.rooms.get(usize::from(dev.room)).map_or("101", |r| r);
        let malformed = p.malformed_rate > 0.0 && dev.rng.random::<f64>() < p.malformed_rate;
        let mut reading = dev.reading(id, room, &obs, dev.seq + 1, timestamp_ms);
        if malformed {
            malformed::write(&mut reading, &mut dev.rng, buf);
            return Emitted::Malformed;
        }
        if serde_json::to_writer(&mut *buf, &reading).is_err() {
            // Writing plain structs into a Vec cannot fail; if it ever did, send nothing rather
            // than half a message, and keep the seq unused.
            buf.clear();
            return Emitted::Silent;
        }
        dev.seq += 1;
        Emitted::Reading { seq: dev.seq }
    }
}

/// The random stream of device `idx`: independent of the fleet size, portable across platforms.
fn device_rng(seed: u64, idx: u32) -> Pcg64Mcg {
    let hi = splitmix64(seed ^ splitmix64(u64::from(idx)));
    let lo = splitmix64(hi ^ 0x5851_F42D_4C95_7F2D);
    Pcg64Mcg::from_seed(((u128::from(hi) << 64) | u128::from(lo)).to_le_bytes())
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Rounds to the 0.01 resolution of a real sensor.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl Device {
    fn new(mut rng: Pcg64Mcg, p: &Params) -> Device {
        let floor = rng.random_range(1..=FLOORS);
        let n = rng.random_range(1..=ROOMS_PER_FLOOR);
        let building = BUILDINGS[rng.random_range(0..BUILDINGS.len())];
        let model = MODELS[rng.random_range(0..MODELS.len())];
        let firmware = FIRMWARES[rng.random_range(0..FIRMWARES.len())];
        let temperature_base = rng.random_range(18.0..32.0);
        let humidity_base = rng.random_range(35.0..70.0);
        let pressure_base = rng.random_range(995.0..1030.0);
        let current_on = rng.random_range(1.0..4.0);
        let switch_on = rng.random::<f64>() < 0.7;
        let battery = rng.random_range(30.0..100.0);
        let drain_per_hour = rng.random_range(0.2..1.0);
        let signal_base = rng.random_range(-85..=-45);
        let cycle = daily_cycle(0, p);
        Device {
            rng,
            seq: 0,
            step: 0,
            temperature: temperature_base + DAILY_TEMPERATURE * cycle,
            temperature_base,
            humidity: humidity_base - DAILY_HUMIDITY * cycle,
            humidity_base,
            pressure: pressure_base,
            pressure_base,
            current: if switch_on { current_on } else { CURRENT_OFF },
            current_on,
            battery,
            drain_per_step: drain_per_hour * p.hours_per_step,
            episode: None,
            injected: Vec::new(),
            building,
            model,
            firmware,
            room: (floor - 1) * ROOMS_PER_FLOOR + (n - 1),
            floor,
            signal_base,
            switch_on,
        }
    }

    /// Starts a due injected episode, or a random one at the fault rate, if none is running.
    fn maybe_start_episode(&mut self, step: u64, p: &Params) {
        if self.episode.is_some() {
            return;
        }
        let kind = match self.injected.iter().position(|&(_, at)| at <= step) {
            Some(i) => Some(self.injected.swap_remove(i).0),
            None if p.fault_rate > 0.0 && self.rng.random::<f64>() < p.fault_rate => {
                Some(FaultKind::ALL[self.rng.random_range(0..FaultKind::ALL.len())])
            }
            None => None,
        };
        if let Some(kind) = kind {
            let now = round2(self.temperature);
            self.episode = Some(Episode::start(kind, now, &mut self.rng));
        }
    }

    /// Moves the physical state one step forward in simulated time.
    fn advance(&mut self, step: u64, p: &Params) {
        let cycle = daily_cycle(step, p);
        let mut noise = || -> f64 { self.rng.sample(StandardNormal) };
        let (n_t, n_h, n_p, n_c) = (noise(), noise(), noise(), noise());

        let target = self.temperature_base + DAILY_TEMPERATURE * cycle;
        self.temperature +=
            THETA_TEMPERATURE * (target - self.temperature) + p.sigma_temperature * n_t;
        let target = self.humidity_base - DAILY_HUMIDITY * cycle;
        self.humidity += THETA_HUMIDITY * (target - self.humidity) + p.sigma_humidity * n_h;
        self.pressure +=
            THETA_PRESSURE * (self.pressure_base - self.pressure) + p.sigma_pressure * n_p;

        if self.rng.random::<f64>() < p.switch_flip_p {
            self.switch_on = !self.switch_on;
            // A machine's current follows its switch at once, not gradually.
            self.current = if self.switch_on {
                self.current_on
            } else {
                CURRENT_OFF
            };
        }
        let (target, sigma) = if self.switch_on {
            (self.current_on, p.sigma_current_on)
        } else {
            (CURRENT_OFF, p.sigma_current_off)
        };
        self.current += THETA_CURRENT * (target - self.current) + sigma * n_c;

        self.battery -= self.drain_per_step;
        if self.battery <= BATTERY_RECHARGE_AT {
            self.battery = 100.0;
        }
    }

    /// The values this step reports, after the running episode (if any); `None` when silent.
    fn observe(&mut self) -> Option<Observed> {
        let jitter: i64 = self.rng.random_range(-2..=2);
        let normal_temperature = self.temperature;
        let mut obs = Observed {
            temperature: normal_temperature,
            humidity: self.humidity.clamp(0.0, 100.0),
            pressure: self.pressure,
            current: self.current.max(0.0),
            switch_on: self.switch_on,
            // Battery is within 5..=100 by construction; the cast only drops the fraction.
            battery: self.battery.round().clamp(0.0, 100.0) as i64,
            signal: (i64::from(self.signal_base) + jitter).clamp(-100, -30),
            temperature_stuck: false,
        };
        if let Some(episode) = &mut self.episode {
            let (o, done) = episode.step(normal_temperature, &mut self.rng);
            obs.temperature_stuck = matches!(episode, Episode::Stuck { .. });
            if done {
                self.episode = None;
            }
            if o.silent {
                return None;
            }
            if let Some(t) = o.temperature {
                obs.temperature = t;
            }
            if let Some(c) = o.current {
                obs.current = c;
            }
        }
        obs.temperature = round2(obs.temperature);
        obs.humidity = round2(obs.humidity);
        obs.pressure = round2(obs.pressure);
        obs.current = round2(obs.current);
        Some(obs)
    }

    fn reading<'a>(
        &self,
        id: &'a str,
        room: &'a str,
        obs: &Observed,
        seq: u64,
        timestamp_ms: i64,
    ) -> Reading<'a> {
        let measurement = |value: f64, unit: &'static str, warn: bool| Measurement {
            value,
            unit: Cow::Borrowed(unit),
            status: if warn {
                SensorStatus::Warning
            } else {
                SensorStatus::Normal
            },
        };
        let t = obs.temperature;
        let t_warn = !obs.temperature_stuck && !(0.0..=70.0).contains(&t);
        let h_warn = !(15.0..=85.0).contains(&obs.humidity);
        let p_warn = !(950.0..=1050.0).contains(&obs.pressure);
        Reading {
            device_id: Cow::Borrowed(id),
            seq,
            timestamp: timestamp_ms,
            location: Location {
                building: Cow::Borrowed(self.building),
                floor: i32::from(self.floor),
                room: Cow::Borrowed(room),
            },
            sensors: Sensors {
                temperature: measurement(t, UNIT_TEMPERATURE, t_warn),
                humidity: measurement(obs.humidity, UNIT_HUMIDITY, h_warn),
                pressure: measurement(obs.pressure, UNIT_PRESSURE, p_warn),
                switch_status: SwitchReading {
                    value: obs.switch_on,
                    status: if obs.switch_on {
                        SwitchState::On
                    } else {
                        SwitchState::Off
                    },
                },
                current: measurement(obs.current, UNIT_CURRENT, obs.current > 10.0),
            },
            device_info: DeviceInfo {
                model: Cow::Borrowed(self.model),
                firmware: Cow::Borrowed(self.firmware),
                battery: obs.battery,
                signal_strength: obs.signal,
            },
        }
    }
}

/// The daily cycle at `step`, in `-1..=1`, peaking at [`PEAK_HOUR`] simulated time.
fn daily_cycle(step: u64, p: &Params) -> f64 {
    let start = TAU * (START_HOUR - PEAK_HOUR + 6.0) / 24.0;
    // Steps are exact in f64 up to 2^53, far beyond any run.
    (start + step as f64 * p.cycle_per_step).sin()
}

#[cfg(test)]
pub(super) fn device_size() -> usize {
    std::mem::size_of::<Device>()
}
